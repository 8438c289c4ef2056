// The new process's side of an in-place upgrade: read the state the previous program left, take
// over its fds, rebuild the process table, serve its connections again and answer the Upgrade
// call. Restoring is synchronous up to the point where the connections are served: if it throws
// or calls process.exit(), nothing was read from or written to any fd yet, and the previous build
// is exec'd with the same state (fallback), which then reports why. A fatal signal (an abort, a
// segfault) cannot be caught: the probe runs the same restore on the same state first, in a child
// process that takes over no fd (dryRunRestore), and a build that crashes there is never exec'd.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { tsshim } from '../gen/proto';
import { Code, type Server } from '../ttrpc';
import type { Logger } from '../sys/logger';
import { Publisher, type OutboxEvent } from '../shim/publisher';
import { nullLogger } from '../sys/logger';
import type { ShimFlags } from '../shim/flags';
import { Container } from '../task/container';
import { ExecProcess, type InitProcess, type Process } from '../task/process';
import { TaskService } from '../task/service';
import { TaskEvents } from '../task/events';
import type { RpcStats } from '../task/rpc';
import { ioFds, type IoState } from '../task/io';
import { REVISION, VERSION } from '../shim/version';
import { writeStateFile, parseState, STATE_VERSION, stateFds, type ProcessState, type UpgradeState } from './state';
import { daemonArgv, execve, keepAcrossExec, STATE_ENV } from './exec';

/** The state file this process was exec'd with, read and checked; null for a normal start. */
export function pendingUpgrade(file: string): { file: string; text: string } | null {
  if (!file) return null;
  delete process.env[STATE_ENV]; // not for runc, spares or the next exec
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    text = '';
  }
  return { file, text };
}

/**
 * Anything the new build cannot restore sends the daemon back to the build that wrote the state.
 * Never returns. A state that already is a fallback has nowhere else to go: the shim is lost.
 */
export function fallBack(
  file: string,
  state: UpgradeState | null,
  reason: string,
  flags: ShimFlags,
  snapshot: boolean,
  log: Logger
): never {
  if (!state || state.fallbackReason !== undefined || state.from.entry === '') {
    log.error('upgrade: the state cannot be restored by any build; the shim exits (its containers keep running)', {
      reason,
    });
    process.exit(1);
  }
  log.error('upgrade: this build cannot restore the state, going back to the previous build', {
    reason,
    entry: state.from.entry,
  });
  state.fallbackReason = reason;
  try {
    writeStateFile(file, state);
    keepAcrossExec(stateFds(state, ioFds));
    execve(process.execPath, daemonArgv(state.from.entry, flags, snapshot), { ...process.env, [STATE_ENV]: file });
  } catch (e) {
    log.error('upgrade: cannot exec the previous build; the shim exits (its containers keep running)', {
      error: (e as Error).message,
    });
    process.exit(1);
  }
}

/**
 * Until the returned disarm() is called, a process.exit() of this build (anywhere: a bug in the
 * restore, a module that exits) takes the fallback instead of ending the shim: the 'exit' event
 * is emitted synchronously before anything is torn down, every fd is still open, and fallback
 * (fallBack above, which never returns) execs the previous build from inside the handler.
 */
export function exitFallback(fallback: (reason: string) => void): () => void {
  const onExit = (code: number) => fallback(`the new build exited with status ${code} while restoring`);
  process.prependOnceListener('exit', onExit);
  return () => process.removeListener('exit', onExit);
}

/** Parses the state; a version this build does not read is a fallback like any other failure. */
export function readState(text: string): UpgradeState {
  return parseState(text);
}

/** The listening socket, as it was. */
export function listenerFrom(state: UpgradeState): net.Server {
  const server = net.createServer();
  server.listen({ fd: state.daemon.listenFd });
  return server;
}

const date = (t: { status: number; at: number; nanos: number } | null) =>
  t ? { status: t.status, at: new Date(t.at), nanos: t.nanos } : null;

function restoreProcess(p: InitProcess | ExecProcess, s: ProcessState): void {
  p.pid = s.pid;
  p.exit = date(s.exit);
  p.reaped = date(s.reaped);
  (p.machine as { restore(state: string): void }).restore(s.state);
}

export interface RestoreTarget {
  service: TaskService;
  publisher: Publisher;
  rpcStats: RpcStats;
  log: Logger;
}

/**
 * Rebuilds the process table and the IO of every process (synchronous: see the file comment).
 * `dryRun`: the same in a probe process (dryRunRestore), without taking over any fd: no IO is
 * adopted (its state is only walked), no pidfd opened, no exit published.
 */
export function restoreTasks(state: UpgradeState, t: RestoreTarget, dryRun = false): void {
  restoreHook(dryRun ? 'dry-run' : 'restore');
  const adoptIO = (c: Container, p: Process, io: IoState | null) => {
    if (!io) return;
    if (dryRun) ioFds(io);
    else c.adoptIO(p, io);
  };
  for (const cs of state.containers) {
    const c = new Container({
      id: cs.id,
      namespace: cs.namespace,
      bundle: cs.bundle,
      rootfs: cs.rootfs,
      stdio: cs.stdio,
      checkpoint: cs.checkpoint,
      parentCheckpoint: cs.parentCheckpoint,
      options: cs.options,
      log: t.log.with({ id: cs.id, namespace: cs.namespace }),
      ...t.service.containerDeps(),
    });
    c.createdAt = new Date(cs.createdAt);
    c.runningExecs = cs.runningExecs;
    restoreProcess(c.init, cs.init);
    adoptIO(c, c.init, cs.init.io);
    const watched: Process[] = cs.init.watched ? [c.init] : [];
    for (const es of cs.execs) {
      const e = new ExecProcess(cs.id, es.execId, es.stdio, es.spec ?? {});
      restoreProcess(e, es);
      c.execs.set(es.execId, e);
      adoptIO(c, e, es.io);
      // Signals go through a pidfd again; the pid is still ours until this process reaps it.
      if (!dryRun && !e.reaped && !e.exit && e.pid && es.state === 'running') e.holdPid();
      if (es.watched) watched.push(e);
    }
    t.service.adopt(c, watched, cs.oom ?? null, dryRun);
  }
  t.service.everCreated = state.daemon.everCreated;
  t.service.shutdownRequested = state.daemon.shutdownRequested;
  Object.assign(t.service.counters, state.counters);
  const pending: OutboxEvent[] = state.events.pending.map((e) => ({ ...e, value: Buffer.from(e.value, 'base64') }));
  t.publisher.adopt(pending);
  Object.assign(t.publisher.stats, {
    sent: state.events.sent,
    retries: state.events.retries,
    discarded: state.events.discarded,
    journalFailures: state.events.journalFailures,
  });
  for (const [method, s] of state.rpc) t.rpcStats.calls.set(method, { ...s, buckets: [...s.buckets] });
}

/** Serves the previous process's connections again; the Upgrade call gets its answer. */
export function restoreConnections(state: UpgradeState, ttrpc: Server, log: Logger): net.Socket[] {
  const sockets = state.connections.map(
    (c) => new net.Socket({ fd: c.fd, readable: true, writable: true, allowHalfOpen: false })
  );
  const adopted = state.connections.map((c, i) =>
    ttrpc.adopt(sockets[i], { lastRequestId: c.lastRequestId, input: Buffer.from(c.input, 'base64') })
  );
  const call = state.upgradeCall;
  if (!call) return sockets;
  const conn = adopted[call.connection];
  if (!conn) {
    log.warn('upgrade: the connection of the Upgrade call is gone');
    return sockets;
  }
  conn.respond(call.streamId, Code.OK, '', upgradeAnswer(state));
  return sockets;
}

/** The answer to the Upgrade call, from whichever build ends up running. */
function upgradeAnswer(state: UpgradeState): Uint8Array {
  const upgraded = state.fallbackReason === undefined;
  return tsshim.v1.UpgradeResponse.encode({
    upgraded,
    reason: state.fallbackReason ?? '',
    pid: process.pid,
    state_version: STATE_VERSION,
    from_version: upgraded ? state.from.version : state.from.version,
    from_revision: state.from.revision,
    to_version: upgraded ? VERSION : state.to.version,
    to_revision: upgraded ? REVISION : '',
    entry: state.to.entry,
  }).finish();
}

/**
 * The upgrade probe's dry run (src/upgrade/probe.ts): everything the restore does with the state
 * text (parse, migrate, rebuild the process table, containers, processes and their state
 * machines, the outbox, the counters, the Upgrade answer) in a probe process of the new build,
 * which holds none of the fds and processes the state names and touches none of them. A build
 * whose restore throws, exits or crashes on this state fails here, before the daemon quiesces.
 */
export function dryRunRestore(text: string): { containers: number } {
  const state = readState(text);
  const log = nullLogger;
  const publisher = new Publisher(null, undefined, log);
  const idle = new NoProcesses();
  const service = new TaskService({
    events: new TaskEvents(publisher),
    exits: idle,
    runner: idle,
    log,
    shimPid: process.pid,
    onEmpty: () => {},
    oomMonitor: () => ({
      add: async () => {},
      remove: () => {},
      flush: async () => {},
      settled: () => true,
      close: () => {},
      handover: () => null,
    }),
  });
  restoreTasks(state, { service, publisher, rpcStats: { calls: new Map(), onCall: () => {} }, log }, true);
  upgradeAnswer(state);
  publisher.close();
  return { containers: service.size };
}

/** Exits and runs for the dry run's service: none arrive, none may start. */
class NoProcesses {
  subscribe(): () => void {
    return () => {};
  }
  run(): never {
    throw new Error('the dry run of the restore runs no process');
  }
  spawn(): never {
    throw new Error('the dry run of the restore runs no process');
  }
}

/**
 * A function a test replaces in the bundle to make restoring fail (proves the fallback): `_mode`
 * says whether it runs in the probe's dry run or in the real restore after the exec.
 */
export function restoreHook(_mode: 'dry-run' | 'restore'): string {
  return 'tsshim-restore-hook';
}
