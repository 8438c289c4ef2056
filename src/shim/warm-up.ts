// What a warm spare (spare.ts) runs once, before it waits to become a container's shim: the code a
// first Create goes through, so that V8 has parsed and compiled it, the libuv threadpool exists and
// the lazily loaded modules are in, before containerd waits on them. Measured on a spare-turned
// daemon: the first Create's I/O set-up fell from ~9 ms to ~3 ms, and a first spawn costs ~10 ms
// against ~2 ms for later ones. Failures are ignored: a warm-up must never stop a spare.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Encodes and decodes the messages of a first Create, Start and State once, so V8 has compiled
 * their codecs (a warm spare; the daemon's snapshot, src/daemon/snapshot.ts, keeps that bytecode).
 */
export function exerciseTaskCodecs(proto: typeof import('../gen/proto')): void {
  const T = proto.containerd.task.v2;
  const req = T.CreateTaskRequest.encode({
    id: 'warm',
    bundle: '/warm',
    rootfs: [{ type: 'overlay', source: 'o', options: ['a'] }],
    stdout: '/x',
    options: { type_url: 'x', value: new Uint8Array(1) },
  }).finish();
  T.CreateTaskRequest.decode(req);
  T.CreateTaskResponse.decode(T.CreateTaskResponse.encode({ pid: 1 }).finish());
  T.StartRequest.decode(T.StartRequest.encode({ id: 'warm' }).finish());
  T.StateResponse.decode(T.StateResponse.encode({ id: 'warm', pid: 1, exited_at: { seconds: 1, nanos: 1 } }).finish());
  const { Any } = proto.google.protobuf;
  Any.decode(Any.encode({ type_url: 'x', value: new Uint8Array(1) }).finish());
}

export async function warmUp(): Promise<void> {
  exerciseTaskCodecs(await import('../gen/proto'));
  // Warming only compiles code paths ahead of use: a failure here shows again, and is reported, when
  // the real call runs.
  await warmProcessIO().catch(() => {});
  await warmRuncClient().catch(() => {});
  await warmEvents().catch(() => {});
  const { cgroupForPid } = await import('../task/cgroups/discovery');
  try {
    const own = cgroupForPid(process.pid);
    await warmStats(own);
  } catch {
    /* no cgroups here */
  }
  const { mountCall } = await import('../task/mount-options');
  mountCall('overlay', ['index=off', 'workdir=/w', 'upperdir=/u', 'lowerdir=/l']);
}

/** mkfifo through the reaper (the spawn path runc takes), then a container's stdio over FIFOs. */
async function warmProcessIO(): Promise<void> {
  const { Reaper } = await import('../sys/reaper');
  const { createProcessIO } = await import('../task/io');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-warm-'));
  try {
    const [stdin, stdout, stderr] = ['in', 'out', 'err'].map((n) => path.join(dir, n));
    const r = await Reaper.instance().run('mkfifo', [stdin, stdout, stderr], { timeoutMs: 5000 });
    if (r.code !== 0) return;
    await fs.promises.stat(stdout); // starts the threadpool
    const io = await createProcessIO({ stdin, stdout, stderr, terminal: false }, { id: 'warm', namespace: 'warm' });
    await io.afterRuncStarted();
    io.closeStdin();
    await io.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The runc client's calls of a container's life, with `true` standing in for runc. */
async function warmRuncClient(): Promise<void> {
  const { RuncClient } = await import('../runc/client');
  const { Reaper } = await import('../sys/reaper');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-warm-'));
  try {
    const runc = new RuncClient({
      binary: 'true',
      root: dir,
      log: path.join(dir, 'log.json'),
      runner: Reaper.instance(),
    });
    await runc.start('warm');
    await runc.kill('warm', 9, { all: true });
    await runc.delete('warm', { force: true });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Encoding a TaskCreate the way the publisher journals it (no sender: nothing is sent). */
async function warmEvents(): Promise<void> {
  const { Publisher } = await import('./publisher');
  const { TaskEvents } = await import('../task/events');
  const publisher = new Publisher(null);
  new TaskEvents(publisher).create('warm', {
    container_id: 'warm',
    bundle: '/warm',
    rootfs: [{ type: 'overlay', source: 'o', options: ['a'] }],
    io: { stdin: '', stdout: '/x', stderr: '/y', terminal: false },
    checkpoint: '',
    pid: 1,
  });
  publisher.close();
}

/**
 * A container's first Stats: collecting and encoding the metrics of the spare's own cgroup (same
 * version, same files) compiles the parsers and the metrics message's encoders. Its files are
 * closed again. Measured on spare-born shims (cgroup v1, 4 containers per round, two rounds): the
 * first Stats took 4.8 and 5.1 ms in the shim (3.3 and 3.5 ms of its CPU), now 2.6 and 3.0 ms (2.4
 * and 2.6 ms); later calls take ~1.3-1.5 ms (the first still opens the files it keeps open).
 */
async function warmStats(own: import('../task/cgroups/discovery').CgroupHandle | null): Promise<void> {
  if (!own) return;
  const { collectEncodedMetrics, releaseCgroupFiles } = await import('../task/cgroups/metrics');
  const { containerd } = await import('../gen/proto');
  const T = containerd.task.v2;
  try {
    T.StatsRequest.decode(T.StatsRequest.encode({ id: 'warm' }).finish());
    const s = await collectEncodedMetrics(own);
    T.StatsResponse.encode({ stats: { type_url: s.typeUrl, value: s.value } }).finish();
  } finally {
    releaseCgroupFiles(own);
  }
}
