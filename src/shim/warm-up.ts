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
  // The rest of a container's life (ctr run --rm: Connect, Wait, Start, State, Delete, Shutdown;
  // Kill for a stop). Measured in a fresh process, a message type's first encode and decode take
  // 0.2-1 ms against ~0.03 ms later: Start, the exit and Delete each paid a few of those.
  T.StartResponse.decode(T.StartResponse.encode({ pid: 1 }).finish());
  T.ConnectRequest.decode(T.ConnectRequest.encode({ id: 'warm' }).finish());
  T.ConnectResponse.decode(T.ConnectResponse.encode({ shim_pid: 1, task_pid: 1, version: 'v' }).finish());
  T.WaitRequest.decode(T.WaitRequest.encode({ id: 'warm', exec_id: 'e' }).finish());
  T.WaitResponse.decode(T.WaitResponse.encode({ exit_status: 1, exited_at: { seconds: 1, nanos: 1 } }).finish());
  T.KillRequest.decode(T.KillRequest.encode({ id: 'warm', signal: 9, all: true }).finish());
  T.DeleteRequest.decode(T.DeleteRequest.encode({ id: 'warm', exec_id: 'e' }).finish());
  T.DeleteResponse.decode(
    T.DeleteResponse.encode({ pid: 1, exit_status: 1, exited_at: { seconds: 1, nanos: 1 } }).finish()
  );
  T.ShutdownRequest.decode(T.ShutdownRequest.encode({ id: 'warm', now: true }).finish());
  const { Any } = proto.google.protobuf;
  Any.decode(Any.encode({ type_url: 'x', value: new Uint8Array(1) }).finish());
}

/**
 * Runs the warm-up step by step until `hurry` says that a start waits for this spare: the rest then
 * costs that start more as waiting than it saves its first calls. Returns whether it ran through.
 */
export async function warmUp(hurry: () => boolean = () => false): Promise<boolean> {
  // Warming only compiles code paths ahead of use: a failure here shows again, and is reported, when
  // the real call runs.
  const steps: (() => Promise<unknown>)[] = [
    async () => exerciseTaskCodecs(await import('../gen/proto')),
    warmProcessIO,
    warmRuncClient,
    warmEvents,
    warmTaskLifecycle,
    warmOomCheck,
    async () => {
      const { cgroupForPid } = await import('../task/cgroups/discovery');
      await warmStats(cgroupForPid(process.pid)); // throws with no cgroups here
    },
    async () =>
      (await import('../task/mount-options')).mountCall('overlay', [
        'index=off',
        'workdir=/w',
        'upperdir=/u',
        'lowerdir=/l',
      ]),
  ];
  for (const step of steps) {
    if (hurry()) return false;
    await step().catch(() => {});
  }
  return true;
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

/**
 * A container's events (create, start, exit, delete) encoded and sent the way the publisher does,
 * to a sender that accepts them in memory, and containerd's answer to a Forward decoded: the
 * first exit and Delete no longer compile their encoders and the publisher's send loop.
 */
async function warmEvents(): Promise<void> {
  const { Publisher } = await import('./publisher');
  const { TaskEvents } = await import('../task/events');
  const { decodeResponse, encodeRequest, encodeResponse } = await import('../ttrpc/codec');
  const sender = {
    async forward(payload: Uint8Array, namespace: string): Promise<void> {
      const req = encodeRequest({
        service: 'containerd.services.events.ttrpc.v1.Events',
        method: 'Forward',
        payload: Buffer.from(payload.buffer, payload.byteOffset, payload.length),
        metadata: [{ key: 'containerd-namespace-ttrpc', value: namespace }],
      });
      if (req.length === 0) throw new Error('empty request');
      decodeResponse(encodeResponse({ payload: Buffer.alloc(0) }));
    },
    reset(): void {},
  };
  const publisher = new Publisher(sender);
  const events = new TaskEvents(publisher);
  events.create('warm', {
    container_id: 'warm',
    bundle: '/warm',
    rootfs: [{ type: 'overlay', source: 'o', options: ['a'] }],
    io: { stdin: '', stdout: '/x', stderr: '/y', terminal: false },
    checkpoint: '',
    pid: 1,
  });
  events.start('warm', 'warm', 1);
  const exit = { status: 1, at: new Date(), nanos: 1 };
  events.exit('warm', 'warm', 'warm', 1, exit);
  events.delete('warm', 'warm', 1, exit);
  await publisher.drain(1000);
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

/**
 * A container's whole life through the Task RPC handlers and the service (Create, Start, Pause,
 * Resume, the init's exit, Wait, State, Delete, Shutdown), in a scratch bundle, with a stand-in for
 * runc that only writes the pid file and an exit handed in by hand: Start, the exit and Delete of
 * the first real container no longer run their code for the first time (lazy compilation, ~1-2 ms
 * of the shim's CPU in each phase on these cores). Nothing is signalled or mounted, and no real
 * runc runs: the stand-in's init pid is this process, which only has its /proc files read; OOM
 * watching is left out (a stand-in monitor). Returns the calls that went through, in order.
 */
export async function warmTaskLifecycle(): Promise<string[]> {
  const { TaskService } = await import('../task/service');
  const { taskHandlers } = await import('../task/rpc');
  const { TaskEvents } = await import('../task/events');
  const { Publisher } = await import('./publisher');
  const { nullLogger } = await import('../sys/logger');
  const { containerd } = await import('../gen/proto');
  const T = containerd.task.v2;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-warm-'));
  let onExit: ((e: import('../sys/reaper').Exit) => void) | null = null;
  const publisher = new Publisher(null);
  const done: string[] = [];
  try {
    const bundle = path.join(dir, 'bundle');
    fs.mkdirSync(bundle);
    fs.writeFileSync(path.join(bundle, 'config.json'), '{"linux":{"namespaces":[{"type":"pid"}]}}');
    const run = (_cmd: string, args: readonly string[]) => {
      const i = args.indexOf('--pid-file');
      if (i >= 0) fs.writeFileSync(args[i + 1], String(process.pid));
      return Promise.resolve({ code: 0, signal: null, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), pid: 0 });
    };
    const svc = new TaskService({
      events: new TaskEvents(publisher),
      exits: {
        subscribe: (fn) => {
          onExit = fn;
          return () => {};
        },
      },
      runner: {
        run,
        spawn: () => {
          throw new Error('warm-up: nothing to spawn');
        },
      },
      log: nullLogger,
      shimPid: process.pid,
      onEmpty: () => {},
      oomMonitor: () => ({
        add: () => Promise.resolve(),
        remove: () => {},
        flush: () => Promise.resolve(),
        settled: () => true,
        close: () => {},
        handover: () => null,
      }),
    });
    const h = taskHandlers(svc, 'warm', nullLogger);
    const ctx = (method: string) => ({
      service: 'containerd.task.v2.Task',
      method,
      metadata: { 'containerd-namespace-ttrpc': ['warm'] },
      signal: new AbortController().signal,
    });
    const call = async (method: string, payload: Uint8Array) => {
      await h[method](Buffer.from(payload), ctx(method));
      done.push(method);
    };
    await call('Create', T.CreateTaskRequest.encode({ id: 'warm', bundle }).finish());
    await call('Connect', T.ConnectRequest.encode({ id: 'warm' }).finish());
    const waited = call('Wait', T.WaitRequest.encode({ id: 'warm' }).finish());
    await call('Start', T.StartRequest.encode({ id: 'warm' }).finish());
    // A running container's Pause and Resume (their runc calls and /tasks/paused, /tasks/resumed).
    // A fresh shim's first of each took 1-3 ms more of its own CPU than later ones; this took off
    // a few tenths at most (within the noise): the rest is the code pages that the cleanup before
    // the call had dropped (bench/results/2026-12-05-bundle-conversions.md).
    await call('Pause', T.PauseRequest.encode({ id: 'warm' }).finish());
    await call('Resume', T.ResumeRequest.encode({ id: 'warm' }).finish());
    (onExit as ((e: import('../sys/reaper').Exit) => void) | null)?.({
      pid: process.pid,
      status: 0,
      at: new Date(),
      atNanos: 0,
      nanos: 0,
    });
    await waited;
    await call('State', T.StateRequest.encode({ id: 'warm' }).finish());
    await call('Delete', T.DeleteRequest.encode({ id: 'warm' }).finish());
    await call('Shutdown', T.ShutdownRequest.encode({ id: 'warm' }).finish());
    svc.close();
  } finally {
    publisher.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return done;
}

/**
 * The OOM check every init exit makes before its event (cgroup v1: a read of the registration's
 * eventfd that finds nothing, EAGAIN): its first run in a process took ~0.4 ms (the error path),
 * later ones ~0.01 ms. Run once on an eventfd of our own, closed again.
 */
export async function warmOomCheck(): Promise<boolean> {
  const { eventfd, EFD_CLOEXEC, EFD_NONBLOCK } = await import('../sys/libc');
  const { EventfdReader } = await import('../task/cgroups/eventfd-reader');
  let signalled = false;
  const reader = new EventfdReader(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), () => (signalled = true));
  try {
    reader.drain();
  } finally {
    reader.close();
  }
  return !signalled;
}
