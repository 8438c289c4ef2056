// Leak hunt on one long-lived shim (a group shim, or the per-node shim): many run/exec/delete
// cycles, sampling the shim's fds, RSS, children and zombies before and after.
//
// Most cycles talk to the shim's socket directly, exactly as containerd would (Create with a bind
// rootfs and a stdout fifo, Start, Wait, Delete; Exec, Start, Wait, Delete in the long-lived
// container): that is 5-10x faster than ctr, so hundreds of cycles fit in CI. Every `ctrEvery`-th
// cycle goes through containerd with ctr instead (its fifos, the `delete` fast path). The same
// driver works against io.containerd.runc.v2's Go shim (same Task API) for comparison.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { TSSHIM_RUNTIME, type Containerd } from './harness';
import { busyboxRootfs, ensureBusyboxImage } from './rootfs';
import { Client } from '../../src/ttrpc';
import { containerd as api } from '../../src/gen/proto';
import { TASK_SERVICE, daemonShims, runDetached, shimPidOf, shimSocketOf } from './containers';
import { fdTargets, listDir, mountsUnder, pidAlive, sampleShim, zombiesOf, type ShimSample } from './proc';
import { sleep, until } from './wait';
import { IDLE_GC_MS } from '../../src/shim/idle-gc';

const T = api.task.v2;
const PROCESS_SPEC_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
const OUTBOX_DIR = process.env.TSSHIM_STATE_DIR || '/run/tsshim';
const SANDBOX_ANNOTATION = 'io.kubernetes.cri.sandbox-id';

export interface LeakOptions {
  runtime: string;
  cycles: number;
  /** Through containerd with ctr every n-th cycle (0: never). */
  ctrEvery: number;
  /** Cycles before the baseline sample (caches, JIT, pools warm up). */
  warmup: number;
  /** 'group': shim shared through the sandbox annotation; 'per-node': containerd runs with TSSHIM_PER_NODE=1. */
  mode: 'group' | 'per-node';
  log: (msg: string) => void;
  sampleEvery?: number;
}

export interface LeakReport {
  runtime: string;
  mode: string;
  cycles: number;
  shimPid: number;
  start: ShimSample;
  baseline: ShimSample;
  end: ShimSample;
  samples: { cycle: number; fds: number; rss: number }[];
  fifoFdsLeft: number;
  execPidFilesLeft: string[];
  mountsLeft: string[];
  stateFiles: string[];
  outboxBytes: number;
  zombies: number;
  otherShims: number;
  durationMs: number;
  msPerCycle: number;
  /** Stats calls answered (each cycle's container, twice, and the long-lived one): the cgroup files they keep open must go with Delete. */
  statsServed: number;
}

/** A fifo the test reads: opened read-write so it never reports EOF between writers. */
class FifoReader {
  private sock: net.Socket;
  data = '';
  constructor(readonly file: string) {
    const r = spawnSync('mkfifo', ['-m', '0600', file]);
    if (r.status !== 0) throw new Error(`mkfifo ${file}: ${r.stderr}`);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.on('data', (d: Buffer) => {
      this.data += d.toString();
    });
    this.sock.on('error', () => {});
  }
  async expect(text: string, timeoutMs = 5000): Promise<void> {
    await until(() => this.data === text, `fifo output ${JSON.stringify(text)} (have ${JSON.stringify(this.data)})`, {
      timeoutMs,
      everyMs: 5,
    });
  }
  close(): void {
    this.sock.destroy();
    fs.rmSync(this.file, { force: true });
  }
}

/**
 * A sample taken once the shim has been idle long enough for its idle collector (src/shim/idle-gc.ts)
 * to run: RSS then shows what the heap retains, not how far it grew before the next collection.
 */
async function settledSample(shim: number): Promise<ShimSample> {
  await sleep(IDLE_GC_MS + 700);
  return sampleShim(shim);
}

export async function runLeakScenario(c: Containerd, o: LeakOptions): Promise<LeakReport> {
  const t0 = Date.now();
  const image = await ensureBusyboxImage(c);
  const tag = `lk-${process.pid.toString(36)}${Date.now().toString(36)}`;
  const host = `${tag}-host`;
  const groupArgs = o.mode === 'group' ? ['--annotation', `${SANDBOX_ANNOTATION}=${tag}`] : [];
  await runDetached(c, host, ['sleep', '1000000'], { runtime: o.runtime, image, extra: groupArgs });
  const shim = o.runtime === TSSHIM_RUNTIME ? await shimPidOf(c, host) : shimPidByBundle(c, host);
  const socket = shimSocketOf(c, host);
  const hostBundle = c.bundleDir(host);
  const template = JSON.parse(fs.readFileSync(path.join(hostBundle, 'config.json'), 'utf8'));
  const work = fs.mkdtempSync(path.join(c.dir, 'leak-'));
  const rootfsSource = busyboxRootfs();
  const client = await Client.connect(socket);
  const md = { 'containerd-namespace-ttrpc': [c.namespace] };
  const call = (method: string, payload: Uint8Array): Promise<Buffer> =>
    client.call(TASK_SERVICE, method, payload, { timeoutMs: 30_000, metadata: md });

  let statsServed = 0;
  /** 1 when the shim answered Stats, 0 when the cgroup was already gone (NotFound). */
  const stats = (id: string): Promise<number> =>
    call('Stats', T.StatsRequest.encode({ id }).finish()).then(
      () => 1,
      (e: { code?: number }) => {
        if (e?.code === 5) return 0;
        throw e;
      }
    );

  async function directRun(i: number): Promise<void> {
    const id = `${tag}-r${i}`;
    const bundle = path.join(work, id);
    fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    const spec = structuredClone(template);
    spec.process.args = ['sh', '-c', `echo run-${i}; exit ${i % 5}`];
    spec.root = { path: 'rootfs', readonly: true };
    spec.linux.cgroupsPath = `/${c.namespace}/${id}`;
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const out = new FifoReader(path.join(work, `${id}.out`));
    const err = new FifoReader(path.join(work, `${id}.err`));
    try {
      await call(
        'Create',
        T.CreateTaskRequest.encode({
          id,
          bundle,
          stdout: out.file,
          stderr: err.file,
          rootfs: [{ type: 'bind', source: rootfsSource, target: '', options: ['rbind', 'ro'] }],
        }).finish()
      );
      await call('Start', T.StartRequest.encode({ id }).finish());
      const w = T.WaitResponse.decode(await call('Wait', T.WaitRequest.encode({ id }).finish()));
      if (w.exit_status !== i % 5) throw new Error(`${id} exited ${w.exit_status}, expected ${i % 5}`);
      await out.expect(`run-${i}\n`);
      // The cgroup lives until Delete (runc delete removes it): a first and a second Stats call.
      for (let k = 0; k < 2; k++) statsServed += await stats(id);
      await call('Delete', T.DeleteRequest.encode({ id }).finish());
    } finally {
      out.close();
      err.close();
    }
    const mounted = mountsUnder(bundle);
    if (mounted.length) throw new Error(`${id}: rootfs still mounted after Delete: ${mounted.join(' ')}`);
    fs.rmSync(bundle, { recursive: true, force: true });
  }

  async function directExec(i: number): Promise<void> {
    const execId = `x${i}`;
    const out = new FifoReader(path.join(work, `${host}-${execId}.out`));
    const err = new FifoReader(path.join(work, `${host}-${execId}.err`));
    try {
      const proc = { ...template.process, args: ['sh', '-c', `echo exec-${i}; exit ${i % 3}`], terminal: false };
      await call(
        'Exec',
        T.ExecProcessRequest.encode({
          id: host,
          exec_id: execId,
          stdout: out.file,
          stderr: err.file,
          spec: { type_url: PROCESS_SPEC_URL, value: Buffer.from(JSON.stringify(proc)) },
        }).finish()
      );
      await call('Start', T.StartRequest.encode({ id: host, exec_id: execId }).finish());
      const w = T.WaitResponse.decode(await call('Wait', T.WaitRequest.encode({ id: host, exec_id: execId }).finish()));
      if (w.exit_status !== i % 3) throw new Error(`exec ${execId} exited ${w.exit_status}, expected ${i % 3}`);
      await out.expect(`exec-${i}\n`);
      await call('Delete', T.DeleteRequest.encode({ id: host, exec_id: execId }).finish());
    } finally {
      out.close();
      err.close();
    }
  }

  async function ctrCycle(i: number): Promise<void> {
    const id = `${tag}-c${i}`;
    const r = await c.ctr(
      ['run', '--rm', '--runtime', o.runtime, ...groupArgs, image, id, 'sh', '-c', `echo ctr-${i}`],
      { timeoutMs: 60_000 }
    );
    if (r.code !== 0 || r.stdout !== `ctr-${i}\n`)
      throw new Error(`ctr run ${id}: ${r.code} ${JSON.stringify(r.stdout)} ${r.stderr}`);
    const e = await c.ctr(['task', 'exec', '--exec-id', `cx${i}`, host, 'sh', '-c', `echo ctr-exec-${i}`], {
      timeoutMs: 60_000,
    });
    if (e.code !== 0 || e.stdout !== `ctr-exec-${i}\n`)
      throw new Error(`ctr exec cx${i}: ${e.code} ${JSON.stringify(e.stdout)} ${e.stderr}`);
  }

  const fifoFds = (): number =>
    fdTargets(shim).filter(
      (t) => t.includes('/fifo/') || t.startsWith(work) || t.endsWith('.out') || t.endsWith('.err')
    ).length;
  const start = sampleShim(shim);
  const fifoFdsAtStart = fifoFds(); // the long-lived container's own stdio
  let baseline = start;
  const samples: LeakReport['samples'] = [];
  const every = o.sampleEvery ?? Math.max(1, Math.floor(o.cycles / 20));
  for (let i = 1; i <= o.cycles; i++) {
    if (o.ctrEvery > 0 && i % o.ctrEvery === 0) await ctrCycle(i);
    else {
      await directRun(i);
      await directExec(i);
      statsServed += await stats(host);
    }
    if (i === o.warmup) baseline = await settledSample(shim);
    if (i % every === 0) {
      const s = sampleShim(shim);
      samples.push({ cycle: i, fds: s.fds, rss: s.rss });
      o.log(
        `cycle ${i}: fds ${s.fds} rss ${(s.rss / 1048576).toFixed(1)} MiB children ${s.children} ${JSON.stringify(s.fdKinds)}`
      );
    }
  }
  client.close();
  const end = await settledSample(shim);
  const stateFiles = listDir(OUTBOX_DIR).filter((f) => f.startsWith(path.basename(socket)));
  let outboxBytes = 0;
  for (const f of stateFiles) if (f.endsWith('.outbox')) outboxBytes += fs.statSync(path.join(OUTBOX_DIR, f)).size;
  const report: LeakReport = {
    runtime: o.runtime,
    mode: o.mode,
    cycles: o.cycles,
    shimPid: shim,
    start,
    baseline,
    end,
    samples,
    fifoFdsLeft: fifoFds() - fifoFdsAtStart,
    execPidFilesLeft: listDir(hostBundle).filter((f) => f.endsWith('.pid') && f !== 'init.pid' && f !== 'shim.pid'),
    mountsLeft: mountsUnder(work),
    stateFiles,
    outboxBytes,
    zombies: zombiesOf([shim]).length,
    otherShims: daemonShims(c).filter((p) => p !== shim).length,
    durationMs: Date.now() - t0,
    msPerCycle: (Date.now() - t0) / o.cycles,
    statsServed,
  };
  if (!pidAlive(shim)) throw new Error('the shim died during the leak run');
  // Clean up the long-lived container.
  await c.ctr(['task', 'kill', '-s', 'KILL', host]);
  await until(
    async () =>
      !(await c.ctr(['task', 'ls'])).stdout.split('\n').some((l) => l.startsWith(host + ' ') && l.includes('RUNNING')),
    'host stopped'
  );
  await c.ctr(['task', 'delete', host]);
  await c.ctr(['container', 'delete', host]);
  fs.rmSync(work, { recursive: true, force: true });
  return report;
}

/** runc.v2 writes no shim.pid for us to trust in every version: find the shim by its -id argument. */
function shimPidByBundle(c: Containerd, id: string): number {
  for (const pid of c.shimPids()) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('-id');
      if (i >= 0 && argv[i + 1] === id) return pid;
    } catch {
      /* gone */
    }
  }
  throw new Error(`no shim found for ${id}`);
}

export function formatLeakReport(r: LeakReport): string {
  const m = (b: number): string => (b / 1048576).toFixed(1);
  return [
    `${r.runtime} (${r.mode}): ${r.cycles} run/exec/delete cycles on shim ${r.shimPid}, ${(r.durationMs / 1000).toFixed(0)} s (${r.msPerCycle.toFixed(0)} ms/cycle)`,
    `  fds: start ${r.start.fds}, after warm-up ${r.baseline.fds}, end ${r.end.fds} ${JSON.stringify(r.end.fdKinds)}`,
    `  RSS: start ${m(r.start.rss)} MiB, after warm-up ${m(r.baseline.rss)} MiB, end ${m(r.end.rss)} MiB (growth after warm-up ${m(r.end.rss - r.baseline.rss)} MiB)`,
    `  children: start ${r.start.children}, end ${r.end.children}; zombies ${r.zombies}; fifo fds left ${r.fifoFdsLeft}; ` +
      `exec pid files left ${r.execPidFilesLeft.length}; mounts left ${r.mountsLeft.length}; other shims ${r.otherShims}`,
    `  ${OUTBOX_DIR} files of this shim: ${r.stateFiles.join(', ') || 'none'} (outbox ${r.outboxBytes} bytes)`,
  ].join('\n');
}
