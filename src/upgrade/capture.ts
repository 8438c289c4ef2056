// The old process's side of an in-place upgrade: quiesce, capture the state, execve into the new
// build (same pid). Nothing irreversible happens before every call finished, every reply and
// every container byte read was written; if that does not come within the bounds, the daemon
// resumes as it was and the Upgrade call says why.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as net from 'node:net';
import { tsshim } from '../gen/proto';
import { Code, TtrpcError, type Server } from '../ttrpc';
import type { Logger } from '../sys/logger';
import type { Reaper } from '../sys/reaper';
import type { Publisher } from '../shim/publisher';
import type { ShimFlags } from '../shim/flags';
import type { TaskService } from '../task/service';
import type { RpcStats } from '../task/rpc';
import type { Process } from '../task/process';
import { ExecProcess, type InitProcess } from '../task/process';
import { ioFds, type IoHandover, type IoState } from '../task/io';
import { REVISION, VERSION } from '../shim/version';
import { SHIM_SERVICE } from '../diag/introspection';
import {
  writeStateFile,
  STATE_VERSION,
  stateFds,
  type ContainerState,
  type ProcessState,
  type UpgradeState,
} from './state';
import { daemonArgv, dropAtExec, execve, keepAcrossExec, STATE_ENV } from './exec';
import { probeBuild, type BuildInfo } from './probe';

/** How long in-flight calls (other than waits, which are replayed) may take to finish. */
export const QUIESCE_CALLS_MS = 10_000;
/** How long container output already read may take to reach its reader. */
export const QUIESCE_IO_MS = 5_000;
/** How long undelivered events get before they are handed over instead. */
export const QUIESCE_EVENTS_MS = 1_000;

/** Calls a new process runs again from their request: they only wait (Task.Wait, Shim.Stats). */
export function replayableCall(service: string, method: string): boolean {
  return (
    (method === 'Wait' && service.startsWith('containerd.task.')) || (service === SHIM_SERVICE && method === 'Stats')
  );
}

/** What the daemon (src/shim/serve.ts) lends the upgrade. */
export interface UpgradeHost {
  flags: ShimFlags;
  /** TSSHIM_SNAPSHOT: the build exec'd (or fallen back to) starts from its snapshot. */
  snapshot: boolean;
  /** This build's shim entry (SHIM_ENTRY): the default target, and the fallback. */
  entry: string;
  /** Where the state file goes (config.stateDir). */
  stateDir: string;
  ttrpc: Server;
  netServer: net.Server;
  service: TaskService;
  publisher: Publisher;
  reaper: Reaper;
  log: Logger;
  rpcStats: RpcStats;
  startedAt: Date;
  socket: string;
  namespace: string;
  group: string;
  spareRequested(): boolean;
  /**
   * Stops the metrics endpoint serving (scrapes already accepted are answered) and returns its
   * listening socket, handed over like the shim's own; null when metrics are off.
   */
  quiesceMetrics(): Promise<{ fd: number; socket: string } | null>;
  /** The upgrade was given up after quiesceMetrics: serve again. */
  resumeMetrics(): Promise<void>;
  /** Release what does not survive the exec and is made again (timers). */
  beforeExec(): void;
}

export function stateFile(stateDir: string, pid: number | string = process.pid): string {
  return path.join(stateDir, `upgrade-${pid}.json`);
}

type UpgradeReply = ReturnType<typeof tsshim.v1.UpgradeResponse.create>;

function reply(r: Partial<UpgradeReply>): Uint8Array {
  return tsshim.v1.UpgradeResponse.encode({
    pid: process.pid,
    from_version: VERSION,
    from_revision: REVISION,
    state_version: STATE_VERSION,
    ...r,
  }).finish();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

let busy = false;

/** The Upgrade handler of tsshim.v1.Shim. */
export function upgradeHandler(host: UpgradeHost) {
  return async (payload: Buffer): Promise<Uint8Array> => {
    const req = tsshim.v1.UpgradeRequest.decode(payload);
    const entry = req.entry || host.entry;
    if (!path.isAbsolute(entry))
      throw new TtrpcError(Code.INVALID_ARGUMENT, `entry must be an absolute path: ${JSON.stringify(entry)}`);
    if (busy) throw new TtrpcError(Code.FAILED_PRECONDITION, 'an upgrade of this shim is already running');
    // Busy from the probe on: the probe no longer blocks the loop, so a second Upgrade could arrive.
    busy = true;
    let info: BuildInfo;
    const dryRunFile = stateFile(host.stateDir, `${process.pid}-dry-run`);
    try {
      // The state the exec would hand over, as it is now, for the probe's dry run of the restore.
      // The real one, written after quiescing, differs a little: containers and execs created or
      // deleted and exits reaped meanwhile, bytes read but not yet written (none here), the
      // connections and the Upgrade call (none here: fds the restore only wraps), the OOM watches
      // and the metrics socket (none here: fds too). What the restore builds from it is the same.
      // It also proves the state dir takes the state file before anything is touched.
      try {
        fs.mkdirSync(host.stateDir, { recursive: true, mode: 0o700 });
        writeStateFile(dryRunFile, captureView(host, entry));
      } catch (e) {
        throw new Error(`cannot write the upgrade state: ${(e as Error).message}`);
      }
      info = await probeBuild(entry, host.snapshot, undefined, dryRunFile);
    } catch (e) {
      busy = false;
      const reason = (e as Error).message;
      host.log.warn('upgrade refused: staying on this build', { entry, reason });
      return reply({ upgraded: false, reason, entry });
    } finally {
      fs.rmSync(dryRunFile, { force: true });
    }
    if (info.dryRun !== true)
      host.log.warn('upgrade: the new build runs no dry run of its restore in the probe (an older build)', {
        entry,
        to: info.version,
      });
    const to = { to_version: info.version, to_revision: info.revision, entry };
    if (req.check) {
      busy = false;
      return reply({ ...to, would_upgrade: true });
    }
    try {
      const why = await quiesceAndExec(host, entry, info);
      // Only a refusal before the exec comes back here: everything was resumed.
      host.log.warn('upgrade given up: staying on this build', { entry, reason: why });
      return reply({ ...to, upgraded: false, reason: why });
    } finally {
      busy = false;
    }
  };
}

/** The Upgrade call in flight (this handler's own), found among the connections' calls. */
function findUpgradeCall(host: UpgradeHost) {
  for (const { conn, calls } of host.ttrpc.inFlight()) {
    const c = calls.find((k) => k.service === SHIM_SERVICE && k.method === 'Upgrade');
    if (c) return { conn, streamId: c.streamId };
  }
  return null;
}

function processesOf(host: UpgradeHost): { c: ReturnType<TaskService['list']>[number]; p: Process }[] {
  const out: { c: ReturnType<TaskService['list']>[number]; p: Process }[] = [];
  for (const c of host.service.list()) for (const p of [c.init, ...c.execs.values()]) out.push({ c, p });
  return out;
}

/** Returns only when it gave up before the exec (the reason); the daemon then runs on unchanged. */
async function quiesceAndExec(host: UpgradeHost, entry: string, info: BuildInfo): Promise<string> {
  const { ttrpc, log } = host;
  log.info('upgrade: quiescing', { to: info.version, revision: info.revision, entry });
  ttrpc.hold();
  const self = findUpgradeCall(host);
  const busyCalls = () =>
    ttrpc
      .inFlight()
      .flatMap(({ conn, calls }) =>
        calls
          .filter((k) => !k.replayable && !(self && conn === self.conn && k.streamId === self.streamId))
          .map((k) => k.method)
      );
  const callsDone = await until(
    () => busyCalls().length === 0 && ttrpc.inFlight().every((c) => c.unsent === 0),
    QUIESCE_CALLS_MS
  );
  if (!callsDone) {
    ttrpc.release();
    const calls = busyCalls();
    return calls.length
      ? `calls still running after ${QUIESCE_CALLS_MS} ms: ${calls.join(', ')}`
      : 'a client does not read its replies';
  }
  // Every process's IO, stopped between two chunks; the destinations flush what they were given.
  const ios = new Map<Process, IoHandover>();
  for (const { c, p } of processesOf(host)) {
    if (!p.io) continue;
    const h = p.io.handover?.();
    if (typeof h !== 'object') {
      ttrpc.release();
      return `the IO of ${c.id}${p.execId ? ` exec ${p.execId}` : ''} cannot be handed over: ${h ?? 'not supported'}`;
    }
    ios.set(p, h);
  }
  for (const h of ios.values()) h.pause();
  const flushed = await until(() => [...ios.values()].every((h) => h.flushed()), QUIESCE_IO_MS);
  if (!flushed) {
    for (const h of ios.values()) h.resume();
    ttrpc.release();
    return `container output was not taken by its reader within ${QUIESCE_IO_MS} ms`;
  }
  await host.publisher.drain(QUIESCE_EVENTS_MS);
  let metrics: { fd: number; socket: string } | null;
  try {
    metrics = await host.quiesceMetrics();
  } catch (e) {
    for (const h of ios.values()) h.resume();
    ttrpc.release();
    return `the metrics endpoint cannot be handed over: ${(e as Error).message}`;
  }
  await host.publisher.hold();
  host.reaper.stop(); // exits from now on wait as zombies for the next process's reaper
  // From here on everything is synchronous up to the exec: nothing can interleave.
  let state: UpgradeState;
  try {
    state = capture(host, entry, info, ios, self, metrics);
  } catch (e) {
    // Only possible before anything was detached (capture checks first): resume.
    host.reaper.resume();
    host.publisher.release();
    void host.resumeMetrics();
    for (const h of ios.values()) h.resume();
    ttrpc.release();
    return `state capture failed: ${(e as Error).message}`;
  }
  const file = stateFile(host.stateDir);
  const fds = stateFds(state, ioFds);
  try {
    fs.mkdirSync(host.stateDir, { recursive: true, mode: 0o700 });
    writeStateFile(file, state);
    keepAcrossExec(fds);
    host.beforeExec();
    log.info('upgrade: exec', {
      entry,
      fds: fds.length,
      containers: state.containers.length,
      connections: state.connections.length,
    });
    execve(process.execPath, daemonArgv(entry, host.flags, host.snapshot), { ...process.env, [STATE_ENV]: file });
  } catch (e) {
    // Past the point of no return (connections and IO detached): the same state through our own
    // build is the way back.
    log.error('upgrade: exec of the new build failed, restoring this build', { error: (e as Error).message });
    state.fallbackReason = `exec failed: ${(e as Error).message}`;
    try {
      writeStateFile(file, state);
      execve(process.execPath, daemonArgv(host.entry, host.flags, host.snapshot), {
        ...process.env,
        [STATE_ENV]: file,
      });
    } catch (e2) {
      dropAtExec(fds);
      log.error('upgrade: cannot exec this build either; the shim is lost', { error: (e2 as Error).message });
      process.exit(1);
    }
  }
}

function time(t: { status: number; at: Date; nanos: number } | null) {
  return t ? { status: t.status, at: t.at.getTime(), nanos: t.nanos } : null;
}

/** What the state is made of besides the process table: detached (capture) or only looked at (captureView). */
interface StateParts {
  connections: UpgradeState['connections'];
  upgradeCall: UpgradeState['upgradeCall'];
  io(p: Process): IoState | null;
  oom(c: ReturnType<TaskService['list']>[number]): UpgradeState['containers'][number]['oom'];
  metrics: { fd: number; socket: string } | null;
  to: UpgradeState['to'];
}

function listenFdOf(host: UpgradeHost): number {
  const listenFd = (host.netServer as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof listenFd !== 'number' || listenFd < 0) throw new Error('the listening socket has no fd');
  return listenFd;
}

function capture(
  host: UpgradeHost,
  entry: string,
  info: BuildInfo,
  ios: Map<Process, IoHandover>,
  self: { conn: unknown; streamId: number } | null,
  metrics: { fd: number; socket: string } | null
): UpgradeState {
  const listenFd = listenFdOf(host);
  // Detaching is the irreversible part: connections first (they hold no call but waits now).
  const conns = host.ttrpc.handover((conn) => new Set(self && conn === self.conn ? [self.streamId] : []));
  const connections = conns.map(({ handover }) => ({
    fd: handover.fd,
    lastRequestId: handover.lastRequestId,
    input: handover.input.toString('base64'),
  }));
  const upgradeCall = self
    ? { connection: conns.findIndex((c) => c.conn === self.conn), streamId: self.streamId }
    : null;
  return stateOf(host, listenFd, {
    connections,
    upgradeCall,
    io: (p) => ios.get(p)?.detach() ?? null,
    oom: (c) => host.service.handOverOom(c),
    metrics,
    to: { entry, version: info.version },
  });
}

/**
 * The state as capture() would write it now, for the probe's dry run of the restore: nothing is
 * detached, paused or stopped. No connections, no Upgrade call, no OOM watch and no metrics
 * socket (each only an fd the restore takes over, which the dry run does not do), no bytes read
 * but not written; IO that cannot be handed over right now is left out.
 */
export function captureView(host: UpgradeHost, entry: string): UpgradeState {
  return stateOf(host, listenFdOf(host), {
    connections: [],
    upgradeCall: null,
    io: (p) => {
      const h = p.io?.handover?.();
      return typeof h === 'object' ? h.view() : null;
    },
    oom: () => null,
    metrics: null,
    to: { entry, version: '' },
  });
}

function stateOf(host: UpgradeHost, listenFd: number, parts: StateParts): UpgradeState {
  const { watched } = host.service.handoverView();
  const { connections, upgradeCall, metrics } = parts;
  const processState = (p: Process): ProcessState => {
    const base: ProcessState = {
      execId: p.execId,
      stdio: p.stdio,
      pid: p.pid,
      state: (p as InitProcess).state,
      exit: time(p.exit),
      reaped: time(p.reaped),
      watched: watched.has(p),
      io: parts.io(p),
    };
    if (p instanceof ExecProcess) base.spec = p.spec;
    return base;
  };
  const containers: ContainerState[] = host.service.list().map((c) => ({
    id: c.id,
    namespace: c.namespace,
    bundle: c.bundle,
    rootfs: c.cfg.rootfs,
    stdio: c.cfg.stdio,
    checkpoint: c.cfg.checkpoint,
    parentCheckpoint: c.cfg.parentCheckpoint,
    options: c.cfg.options,
    createdAt: c.createdAt.getTime(),
    runningExecs: c.runningExecs,
    init: processState(c.init),
    execs: [...c.execs.values()].map(processState),
    oom: parts.oom(c),
  }));
  const pub = host.publisher;
  return {
    version: STATE_VERSION,
    from: { version: VERSION, revision: REVISION, entry: host.entry },
    to: parts.to,
    writtenAt: Date.now(),
    daemon: {
      startedAt: host.startedAt.getTime(),
      socket: host.socket,
      namespace: host.namespace,
      group: host.group,
      listenFd,
      metrics,
      everCreated: host.service.everCreated,
      shutdownRequested: host.service.shutdownRequested,
      spareRequested: host.spareRequested(),
    },
    connections,
    upgradeCall,
    containers,
    events: {
      pending: pub.pending().map((e) => ({ ...e, value: Buffer.from(e.value).toString('base64') })),
      sent: pub.stats.sent,
      retries: pub.stats.retries,
      discarded: pub.stats.discarded,
      journalFailures: pub.stats.journalFailures,
    },
    counters: { ...host.service.counters },
    rpc: [...host.rpcStats.calls.entries()].map(([m, s]) => [m, { ...s, buckets: [...s.buckets] }]),
  };
}
