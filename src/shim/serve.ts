// Daemon mode: the long-lived shim. Subreaper, logs to the bundle's log fifo, serves the Task API
// on the socket `start` handed over as fd 3, publishes events, exits after the last Shutdown.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { ShimFlags } from './flags';
import { createLogger, openLogFifo, type Logger } from './logger';
import { setChildSubreaper } from './sys';
import { Reaper } from './reaper';
import { OutboxJournal, Publisher, TtrpcEventSender } from './publisher';
import { Server } from '../ttrpc';
import { TaskService } from '../task/service';
import { TaskEvents } from '../task/events';
import { taskHandlers, TASK_SERVICES, type RpcStats } from '../task/rpc';
import { registerShimService } from '../task/shim-service';
import { startMetricsFromEnv } from './metrics';
import { IdleCollector } from './idle-gc';
import { SHIM_ENTRY } from './entry';
import { PER_NODE_GROUP } from './start';
import { ensureSpare, enterServing, leaveServing, sparePool, untrustedState } from './spare';
import { shimPidFile } from './address';

export const OUTBOX_DIR = process.env.TSSHIM_STATE_DIR || '/run/tsshim';

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
}

/** A socket the daemon was handed already bound (by a spare, src/shim/spare.ts). */
export interface BoundSocket { server: net.Server; socket: string; group: string; /** what the spare could not take on from its start */ notes?: string[] }

function listenFrom(flags: ShimFlags): Promise<{ server: net.Server; socket: string }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    if (flags.socket) {
      fs.rmSync(flags.socket, { force: true });
      server.listen(flags.socket, () => resolve({ server, socket: flags.socket }));
    } else {
      server.listen({ fd: 3 }, () => resolve({ server, socket: process.env.TSSHIM_SOCKET || '' }));
    }
  });
}

export async function runDaemon(flags: ShimFlags, bound?: BoundSocket): Promise<void> {
  const startedAt = new Date();
  // Look like the Go shim in ps and /proc/<pid>/cmdline: operators and tools search for this name.
  process.title = ['containerd-shim-tsshim-v2', '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address].join(' ');
  setChildSubreaper();
  const bundle = process.cwd();
  const log = createLogger(openLogFifo(path.join(bundle, 'log')), flags.debug ? 'debug' : 'info', {
    runtime: 'io.containerd.tsshim.v2', namespace: flags.namespace,
  });
  // Never use cwd after this point: a group shim's first bundle is deleted under it.
  process.chdir('/');
  process.on('uncaughtException', (e) => log.error('uncaught exception', { error: e.stack ?? e.message }));
  process.on('unhandledRejection', (e: any) => log.error('unhandled rejection', { error: e?.stack ?? String(e) }));

  const { server: netServer, socket } = bound ?? await listenFrom(flags);
  const group = bound?.group ?? (process.env.TSSHIM_GROUP || flags.id);
  const perNode = group === PER_NODE_GROUP;
  // The sh fast path of `start` (bin/) checks this pid file before it hands out our address to a
  // container of our group (per-node: of our namespace).
  // Files in a state dir others can write to are not ours to trust: no pid file, no spares.
  const untrusted = untrustedState(sparePool(flags.address));
  const pidFile = socket && !untrusted ? shimPidFile(socket) : '';
  if (pidFile) { fs.mkdirSync(OUTBOX_DIR, { recursive: true, mode: 0o700 }); fs.writeFileSync(pidFile, String(process.pid)); }
  const journalFile = path.join(OUTBOX_DIR, `${path.basename(socket || `pid-${process.pid}`)}.outbox`);
  // Events a previous shim on this socket never delivered belong to its containers, which containerd
  // already reported itself when that shim went away (its on-close hook publishes exit/delete).
  // Replaying them here would announce a stale exit for a new container with the same id.
  const stale = OutboxJournal.load(journalFile);
  if (stale.length) {
    log.warn('discarding undelivered events of a previous shim', { count: stale.length, topics: stale.map((e) => e.topic).join(',') });
    fs.rmSync(journalFile, { force: true });
  }
  const ttrpcAddress = process.env.TTRPC_ADDRESS || '';
  if (!ttrpcAddress) log.warn('TTRPC_ADDRESS is not set: events are not published');
  const sender = ttrpcAddress ? new TtrpcEventSender(ttrpcAddress) : null;
  sender?.preconnect();
  const publisher = new Publisher(sender, new OutboxJournal(journalFile), log);
  publisher.stats.discarded = stale.length;

  const idleGc = new IdleCollector();
  // The next container's warm spare boots once this container runs: booting it during Create and
  // Start took CPU from runc there (+8 ms and +4 ms on these 2 cores).
  let spareRequested = perNode || !!untrusted;
  const requestSpare = () => {
    if (spareRequested) return;
    spareRequested = true;
    ensureSpare(SHIM_ENTRY, flags);
  };
  // Spares of this containerd may live while a shim serves it (a per-node daemon keeps none).
  if (!perNode && !untrusted) enterServing(flags.address);
  const rpcStats: RpcStats = {
    calls: new Map(),
    onCall: (method, failed) => {
      idleGc.activity();
      if (method === 'Start' && !failed) requestSpare();
    },
  };
  const ttrpc = new Server({ log: (level, msg, fields) => log[level](msg, fields as any) });
  let exiting = false;
  const service = new TaskService({
    events: new TaskEvents(publisher),
    reaper: Reaper.instance(),
    log,
    shimPid: process.pid,
    // A per-node shim is the namespace's long-lived daemon: it stays when its last container goes.
    onEmpty: () => { if (!perNode) void shutdown('no containers left'); },
  });
  const daemon: Daemon = { service, publisher, log, rpcStats, startedAt, socket, namespace: flags.namespace, group, idleGc };
  const handlers = taskHandlers(service, flags.namespace, log, rpcStats);
  for (const name of TASK_SERVICES) ttrpc.register(name, handlers);
  registerShimService(ttrpc, daemon);
  const metrics = await startMetricsFromEnv(daemon);
  ttrpc.serve(netServer);

  async function shutdown(reason: string): Promise<void> {
    if (exiting) return;
    exiting = true;
    log.info('shim shutting down', { reason });
    // First of all: no new container may be sent here by the sh fast path.
    if (pidFile) fs.rmSync(pidFile, { force: true });
    // The last serving shim takes the spares with it; otherwise a container that never started
    // still had a start, and the next one gets a spare.
    if (!perNode && !untrusted) leaveServing(SHIM_ENTRY, flags, service.everCreated && !spareRequested);
    // Let the Shutdown reply reach containerd first.
    await new Promise((r) => setTimeout(r, 20));
    await ttrpc.shutdown(1000).catch(() => {});
    const drained = await publisher.drain(5000);
    publisher.close();
    if (drained) fs.rmSync(journalFile, { force: true });
    if (socket) fs.rmSync(socket, { force: true });
    metrics?.close();
    idleGc.close();
    service.close();
    process.exit(0);
  }

  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGPIPE', () => {});
  log.info('shim started', { pid: process.pid, socket, group });
  if (untrusted) log.warn('state dir not trusted: no spares and no start fast path for this shim', { reason: untrusted });
  for (const note of bound?.notes ?? []) log.warn('spare could not take on its start\'s settings', { what: note });
  // containerd calls Create right after `start`; a shim that never got a container (the daemon gave
  // up between start and Create) would otherwise wait forever for a Shutdown that never comes.
  if (!perNode) setTimeout(() => { if (service.size === 0 && !service.everCreated) void shutdown('no container created'); }, 60_000).unref();
}
