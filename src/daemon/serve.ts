// Daemon mode: the long-lived shim. Subreaper, logs to the bundle's log fifo, serves the Task API
// on the socket `start` handed over as fd 3, publishes events, exits after the last Shutdown.
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { ShimFlags } from '../shim/flags';
import { BundleLogSink, createLogger, type Fields, type Logger } from '../sys/logger';
import { setShimArgv } from '../shim/proc-title';
import { setChildSubreaper } from '../sys/libc';
import { Reaper } from '../sys/reaper';
import { OutboxJournal, Publisher, TtrpcEventSender } from '../shim/publisher';
import { Server } from '../ttrpc';
import { TaskService } from '../task/service';
import { TaskEvents } from '../task/events';
import { taskHandlers, TASK_SERVICES, type RpcStats } from '../task/rpc';
import { registerShimService } from '../diag/introspection';
import { startConfiguredMetrics } from '../diag/metrics-endpoint';
import { daemonCollection, IdleCollector, IDLE_GC_MS, processFootprint } from '../shim/idle-gc';
import { loadedBundle } from './code-cache';
import { SHIM_ENTRY } from './entry';
import { PER_NODE_GROUP } from '../shim/start';
import {
  ensureSpare,
  enterServing,
  leaveServing,
  SpareLaunch,
  sparePool,
  stopSpares,
  untrustedState,
  type BoundSocket,
  type PoolReturn,
} from '../shim/spare';
import { groupLookupLine, shimGroupFile, shimJournalFile, shimPidFile, writeFileAtomic } from '../shim/address';
import type { ShimConfig } from '../shim/config';
import { SHIM_SERVICE } from '../diag/introspection';
import { replayableCall, upgradeHandler } from '../upgrade/capture';
import {
  exitFallback,
  fallBack,
  listenerFrom,
  pendingUpgrade,
  readState,
  restoreConnections,
  restoreTasks,
} from '../upgrade/restore';
import type { UpgradeState } from '../upgrade/state';

type ProcessListener = Parameters<typeof process.removeListener>[1];

/** How long an unwanted shim (no container, containerd gone or asked for Shutdown) waits before it exits. */
const IDLE_EXIT_GRACE_MS = 1000;
/**
 * How long a leaving shim keeps trying to deliver its undelivered events. containerd 2.x deletes a
 * task that stopped while it was down as it loads its shims, before it serves the events socket: a
 * loaded restart (load ~35 on 2 cores) took more than 5 s to open it and the exit was lost (CI on
 * 2.3.4). The shim is no longer wanted meanwhile; it lingers only while events are undelivered.
 */
const SHUTDOWN_DRAIN_MS = 30_000;
/** How long a daemon going back to the spare pool waits for the descriptors it closed to go. */
const POOL_RETURN_WAIT_MS = 100;
/** How long a leaving daemon waits for its runc runs to end before it boots the spare it owes. */
const SHUTDOWN_SPARE_WAIT_MS = 1000;

export interface Daemon {
  service: TaskService;
  publisher: Publisher;
  log: Logger;
  rpcStats: RpcStats;
  startedAt: Date;
  socket: string;
  namespace: string;
  group: string;
  idleGc: IdleCollector;
  metricsSocket: string | null;
}

function listenFrom(flags: ShimFlags, handedSocket: string): Promise<{ server: net.Server; socket: string }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    if (flags.socket) {
      fs.rmSync(flags.socket, { force: true });
      server.listen(flags.socket, () => resolve({ server, socket: flags.socket }));
    } else {
      server.listen({ fd: 3 }, () => resolve({ server, socket: handedSocket }));
    }
  });
}

function upgradeBundle(text: string | undefined): string | null {
  if (!text) return null;
  try {
    return JSON.parse(text).containers?.[0]?.bundle || null;
  } catch {
    return null;
  }
}

/** The state as far as it parses, for a fallback (which needs only where the previous build is). */
function looseState(text: string): UpgradeState | null {
  try {
    return JSON.parse(text);
  } catch {
    return null; // nothing to fall back with
  }
}

export async function runDaemon(
  flags: ShimFlags,
  config: ShimConfig,
  bound?: BoundSocket,
  back?: PoolReturn
): Promise<void> {
  // An in-place upgrade exec'd us with the previous program's state (src/upgrade/).
  const upgrade = pendingUpgrade(config.upgradeStateFile);
  let startedAt = new Date();
  // Look like the Go shim in ps and /proc/<pid>/cmdline (NUL-separated arguments): operators and
  // tools search for this name and split it; bin/ sh checks that it starts with it (is_shim).
  setShimArgv(flags);
  setChildSubreaper();
  // After an in-place upgrade cwd is / already: log to the first container's bundle as before.
  const bundle = upgradeBundle(upgrade?.text) ?? process.cwd();
  // Follows the containers: the first bundle's fifo loses its reader when that container goes.
  let liveBundles: () => string[] = () => [];
  const logSink = new BundleLogSink(bundle, () => liveBundles());
  const log = createLogger(logSink, flags.debug ? 'debug' : 'info', {
    runtime: 'io.containerd.tsshim.v2',
    namespace: flags.namespace,
  });
  // Never use cwd after this point: a group shim's first bundle is deleted under it.
  process.chdir('/');
  // Process-level listeners, taken off again by a daemon that goes back to the spare pool.
  const processListeners: [string, ProcessListener][] = [];
  const listen = (event: string, fn: ProcessListener) => {
    process.on(event, fn);
    processListeners.push([event, fn]);
  };
  // Loud on purpose (tests grep the log for these words): either one is a bug in tsshim.
  listen('uncaughtException', (e: Error) =>
    log.error('uncaught exception (a tsshim bug)', { error: e.stack ?? e.message })
  );
  listen('unhandledRejection', (e: unknown) =>
    log.error('unhandled rejection (a tsshim bug)', { error: (e as Error | null | undefined)?.stack ?? String(e) })
  );

  let state: UpgradeState | null = null;
  // Until the Upgrade call is answered, a process.exit() of this build is a failed restore too.
  const disarmExitFallback = upgrade
    ? exitFallback((reason) =>
        fallBack(upgrade.file, state ?? looseState(upgrade.text), reason, flags, config.snapshot, log)
      )
    : () => {};
  if (upgrade) {
    try {
      state = readState(upgrade.text);
    } catch (e) {
      fallBack(upgrade.file, looseState(upgrade.text), (e as Error).message, flags, config.snapshot, log);
    }
    startedAt = new Date(state.daemon.startedAt);
  }
  // Restored: the listener is taken over from its fd with the rest of the state, below.
  const listening = state
    ? { server: null as unknown as net.Server, socket: state.daemon.socket }
    : (bound ?? (await listenFrom(flags, config.handoff.socket)));
  let netServer = listening.server;
  const socket = listening.socket;
  const group = state?.daemon.group ?? bound?.group ?? (config.handoff.group || flags.id);
  const perNode = group === PER_NODE_GROUP;
  // The sh fast path of `start` (bin/) checks this pid file before it hands out our address to a
  // container of our group (per-node: of our namespace).
  // Files in a state dir others can write to are not ours to trust: no pid file, no spares.
  const pool = sparePool(flags.address, config.stateDir);
  const untrusted = untrustedState(pool);
  const pidFile = socket && !untrusted ? shimPidFile(socket, config.stateDir) : '';
  if (pidFile) {
    // A full or read-only state dir costs only the fast path (start then goes the slow way): never the shim.
    try {
      fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(pidFile, String(process.pid));
    } catch (e) {
      log.warn('cannot write the shim pid file', { file: pidFile, error: e });
    }
  }
  // The same answer for the sh without hashing (address.ts shimGroupFile): written after the pid
  // file, removed before it, and only while it still names this process (another containerd's
  // shim of the same namespace and group name may have replaced it: its line names its address).
  const lookupFile = pidFile ? shimGroupFile(flags.namespace, group, config.stateDir) : '';
  const lookupLine = lookupFile ? groupLookupLine(socket, process.pid, flags.namespace, group, flags.address) : null;
  if (lookupFile && lookupLine) {
    try {
      writeFileAtomic(lookupFile, lookupLine);
    } catch (e) {
      log.warn('cannot write the shim group lookup', { file: lookupFile, error: e });
    }
  }
  // An untrusted state dir gets no journal either: root must not append to a file another user planted.
  const journalFile = untrusted ? '' : shimJournalFile(socket || `pid-${process.pid}`, config.stateDir);
  // Events a previous shim on this socket never delivered belong to its containers, which containerd
  // already reported itself when that shim went away (its on-close hook publishes exit/delete).
  // Replaying them here would announce a stale exit for a new container with the same id.
  // (After an in-place upgrade the journal is this shim's own: its pending events come with the state.)
  const stale = journalFile && !state ? OutboxJournal.load(journalFile) : [];
  if (stale.length) {
    log.warn('discarding undelivered events of a previous shim', {
      count: stale.length,
      topics: stale.map((e) => e.topic).join(','),
    });
    fs.rmSync(journalFile, { force: true });
  }
  const ttrpcAddress = config.ttrpcAddress;
  if (!ttrpcAddress) log.warn('TTRPC_ADDRESS is not set: events are not published');
  const sender = ttrpcAddress ? new TtrpcEventSender(ttrpcAddress) : null;
  sender?.preconnect();
  let journal: OutboxJournal;
  try {
    journal = new OutboxJournal(journalFile || null);
  } catch (e) {
    log.warn('cannot open the event journal: events are sent but not kept across a shim crash', {
      file: journalFile,
      error: e,
    });
    journal = new OutboxJournal(null);
  }
  const publisher = new Publisher(sender, journal, log);
  publisher.stats.discarded = stale.length;

  const idleGc = new IdleCollector(IDLE_GC_MS, daemonCollection(config.trim), {
    footprint: processFootprint,
    compactFirst: true,
    log,
  });
  // The next container's warm spare boots once this container runs and the shim is quiet (see
  // SpareLaunch): booting it during Create and Start took CPU from runc there (+8 ms and +4 ms on
  // these 2 cores), and right after Start it delayed the exit and Delete.
  /** False when it cannot boot now (a runc of ours runs): try again. */
  const bootSpare = (): boolean => {
    // Off the RPC path, but a full state dir (the spare pool lives there) must still not throw.
    try {
      return ensureSpare(SHIM_ENTRY, flags, config);
    } catch (e) {
      log.warn('cannot start a warm spare', { error: e });
      return true;
    }
  };
  const spareLaunch = new SpareLaunch(bootSpare, {
    launched: perNode || !!untrusted || !!state?.daemon.spareRequested,
  });
  // Spares of this containerd may live while a shim serves it (a per-node daemon keeps none).
  if (!perNode && !untrusted) enterServing(pool);
  const rpcStats: RpcStats = {
    calls: new Map(),
    onCall: (method, failed, query) => {
      if (query) idleGc.query();
      else idleGc.activity();
      spareLaunch.activity();
      if (method === 'Start' && !failed) spareLaunch.started();
    },
  };
  // Connections opening and closing count as activity: a client that held memory without ever
  // completing a call (partial frames) must still be followed by the idle collection.
  const ttrpc = new Server({
    log: (level, msg, fields) => log[level](msg, fields as Fields | undefined),
    onActivity: () => idleGc.activity(),
    replayable: replayableCall,
  });
  let exiting = false;
  // Connections to our socket (containerd keeps one open for as long as it cares about the shim).
  let connections = 0;
  const serveListener = () => {
    netServer.on('connection', (sock: net.Socket) => {
      connections++;
      sock.once('close', () => {
        if (--connections === 0) exitIfUnwanted('containerd closed every connection');
      });
    });
    ttrpc.serve(netServer);
  };
  /**
   * A shim that holds no container must not outlive containerd's interest: after a Create failed or
   * was abandoned, go once containerd asked for Shutdown (maybe while that Create still ran) or closed
   * every connection. The grace lets a new Create through the sh fast path win over the exit.
   */
  const exitIfUnwanted = (reason: string) => {
    if (perNode || exiting) return;
    setTimeout(() => {
      const unwanted = service.size === 0 && service.everCreated && (service.shutdownRequested || connections === 0);
      if (unwanted) void shutdown(reason);
    }, IDLE_EXIT_GRACE_MS).unref();
  };
  // Restored: exits that came during the swap are reaped once the process table is back.
  const reaper = Reaper.instance(state ? { initialReap: false } : {});
  const service = new TaskService({
    events: new TaskEvents(publisher),
    exits: reaper,
    runner: Reaper.instance(),
    runcTimeoutMs: config.runcTimeoutMs,
    log,
    shimPid: process.pid,
    // A per-node shim is the namespace's long-lived daemon: it stays when its last container goes.
    onEmpty: () => {
      if (!perNode) void shutdown('no containers left');
      else idleGc.released();
    },
    onIdle: (reason) => exitIfUnwanted(reason),
  });
  liveBundles = () => service.list().map((c) => c.bundle);
  const daemon: Daemon = {
    service,
    publisher,
    log,
    rpcStats,
    startedAt,
    socket,
    namespace: flags.namespace,
    group,
    idleGc,
    metricsSocket: null,
  };
  const handlers = taskHandlers(service, flags.namespace, log, rpcStats);
  for (const name of TASK_SERVICES) ttrpc.register(name, handlers);
  registerShimService(ttrpc, daemon);
  let metrics: Awaited<ReturnType<typeof startConfiguredMetrics>> = null;
  ttrpc.register(SHIM_SERVICE, {
    Upgrade: upgradeHandler({
      flags,
      snapshot: config.snapshot,
      entry: SHIM_ENTRY,
      stateDir: config.stateDir,
      ttrpc,
      get netServer() {
        return netServer;
      },
      service,
      publisher,
      reaper,
      log,
      rpcStats,
      startedAt,
      socket,
      namespace: flags.namespace,
      group,
      spareRequested: () => spareLaunch.launched,
      quiesceMetrics: async () => (metrics ? { fd: await metrics.quiesce(), socket: metrics.socket } : null),
      resumeMetrics: async () => metrics?.resume(),
      beforeExec: () => idleGc.close(),
    }),
  });
  if (state && upgrade) {
    // One synchronous stretch: if any of it throws, no fd was read yet and the previous build
    // takes the same state back (fallBack never returns).
    try {
      restoreTasks(state, { service, publisher, rpcStats, log });
      netServer = listenerFrom(state);
      serveListener();
      for (const sock of restoreConnections(state, ttrpc, log)) {
        connections++;
        sock.once('close', () => {
          if (--connections === 0) exitIfUnwanted('containerd closed every connection');
        });
      }
    } catch (e) {
      fallBack(
        upgrade.file,
        state,
        `the new build failed to restore: ${(e as Error).message}`,
        flags,
        config.snapshot,
        log
      );
    }
    disarmExitFallback();
    reaper.reapNow();
    fs.rmSync(upgrade.file, { force: true });
    if (state.fallbackReason !== undefined)
      log.warn('upgrade: fell back to this build', { reason: state.fallbackReason });
    else
      log.info('upgrade: restored', {
        from: state.from.version,
        containers: state.containers.length,
        connections: state.connections.length,
      });
    journal.rewrite(publisher.pending());
    // Spares run the build they booted with: retire them, the next one boots on this build.
    if (!perNode && !untrusted && state.fallbackReason === undefined) {
      try {
        stopSpares(pool);
      } catch (e) {
        log.warn('cannot retire spares', { error: e });
      }
    }
  } else {
    serveListener();
  }
  metrics = await startConfiguredMetrics(daemon, config, state?.daemon.metrics ?? undefined);
  daemon.metricsSocket = metrics?.socket ?? null;

  async function shutdown(reason: string): Promise<void> {
    if (exiting) return;
    exiting = true;
    log.info('shim shutting down', { reason });
    // First of all: no new container may be sent here by the sh fast path.
    try {
      if (lookupLine && fs.readFileSync(lookupFile, 'utf8') === lookupLine) fs.rmSync(lookupFile, { force: true });
    } catch {
      /* gone already */
    }
    if (pidFile) fs.rmSync(pidFile, { force: true });
    // The last serving shim takes the spares with it; otherwise a container that never started
    // still had a start, and the next one gets a spare (also one this shim was still to boot).
    const othersServe = !perNode && !untrusted && leaveServing(pool);
    const spareDue = spareLaunch.leave() && service.everCreated;
    // Let the Shutdown reply reach containerd first.
    await new Promise((r) => setTimeout(r, 20));
    // A daemon that began as a spare becomes the spare that is due itself, once it let go of its
    // containers (pool-return.ts): no Node boot for the next container. Not after an in-place
    // upgrade (another program's process) or for another containerd's pool.
    const mayReturn = othersServe && spareDue && !!back && back.pool === pool && !state;
    // containerd no longer waits for this shim: the spare's launch and boot overlap its cleanup
    // (a runc of ours still running, e.g. a delete containerd gave up on, delays it a little).
    const bootDueSpare = async () => {
      for (let waited = 0; !bootSpare() && waited < SHUTDOWN_SPARE_WAIT_MS; waited += 10)
        await new Promise((r) => setTimeout(r, 10));
    };
    if (othersServe && spareDue && !mayReturn) await bootDueSpare();
    await ttrpc.shutdown(1000).catch(() => {}); // the process exits next: a connection that did not close goes with it
    const drained = await publisher.drain(SHUTDOWN_DRAIN_MS);
    publisher.close();
    if (drained && journalFile) fs.rmSync(journalFile, { force: true });
    if (socket) fs.rmSync(socket, { force: true });
    metrics?.close();
    idleGc.close();
    service.close();
    if (mayReturn && drained && (await returnToPool(back))) return;
    if (mayReturn) await bootDueSpare();
    process.exit(0);
  }

  /** Takes off what this daemon put on the process and hands it back to the pool; false when it may not go. */
  async function returnToPool(to: PoolReturn): Promise<boolean> {
    clearTimeout(noContainerTimer);
    for (const [event, fn] of processListeners) process.removeListener(event, fn);
    // Sockets closed above (the event client, containerd's connections) let go of their
    // descriptors a few loop turns later.
    let why = '';
    for (let waited = 0; waited <= POOL_RETURN_WAIT_MS; waited += 5) {
      why = to.rejoin(logSink.openFd >= 0 ? [logSink.openFd] : []);
      if (!why) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    if (why) {
      log.info('shim exits instead of going back to the spare pool', { reason: why });
      return false;
    }
    log.info('shim went back to the spare pool', { pid: process.pid });
    logSink.close();
    return true;
  }

  listen('SIGTERM', () => void shutdown('SIGTERM'));
  listen('SIGINT', () => void shutdown('SIGINT'));
  // Stays for the life of the process: taking the last SIGPIPE listener off puts the default action
  // back (libuv resets it), and the next write to a gone reader (the log fifo) would kill us.
  if (process.listenerCount('SIGPIPE') === 0) process.on('SIGPIPE', () => {});
  log.info('shim started', { pid: process.pid, socket, group, loaded: loadedBundle()?.from ?? 'modules' });
  if (untrusted)
    log.warn('state dir not trusted: no spares and no start fast path for this shim', { reason: untrusted });
  for (const note of bound?.notes ?? []) log.warn("spare could not take on its start's settings", { what: note });
  // containerd calls Create right after `start`; a shim that never got a container (the daemon gave
  // up between start and Create) would otherwise wait forever for a Shutdown that never comes.
  const noContainerTimer = perNode
    ? undefined
    : setTimeout(() => {
        if (service.size === 0 && !service.everCreated) void shutdown('no container created');
      }, 60_000).unref();
}
