// The state a shim daemon hands to the next build during an in-place upgrade (see README
// "Upgrading tsshim"). JSON in a file under the state dir; fds are numbers that stay open across
// the execve. Versioned: a build reads every version it lists in ACCEPTED_STATE_VERSIONS (older
// ones through migrate()) and refuses newer ones, so a downgrade ends in the fallback, never in a
// misread state.
import * as fs from 'node:fs';
import type { IoState } from '../task/io';
import type { StdioConfig } from '../task/io';
import type { MountSpec } from '../task/rootfs';
import type { RuntimeOptions } from '../task/options';
import type { OomHandover } from '../task/service';

/**
 * The version this build writes. Bump it (and migrate older ones) when a field changes meaning or
 * the state hands over an fd an older build would not know to take up.
 * 2: a container's OOM watch (a v1 eventfd, the v2 oom_kill count already reported), the metrics
 *    endpoint's listening socket.
 */
export const STATE_VERSION = 2;
/** The versions this build reads. */
export const ACCEPTED_STATE_VERSIONS: readonly number[] = [1, 2];

export interface TimeState {
  status: number;
  at: number;
  nanos: number;
}

export interface ProcessState {
  execId: string;
  stdio: StdioConfig;
  pid: number;
  state: string;
  exit: TimeState | null;
  reaped: TimeState | null;
  /** Its exit is still awaited by the process table (the reaper reports it to the new process). */
  watched: boolean;
  io: IoState | null;
  /** Exec processes: the process spec for runc exec. */
  spec?: Record<string, unknown>;
}

export interface ContainerState {
  id: string;
  namespace: string;
  bundle: string;
  rootfs: MountSpec[];
  stdio: StdioConfig;
  checkpoint: string;
  parentCheckpoint: string;
  options: RuntimeOptions;
  createdAt: number;
  runningExecs: number;
  init: ProcessState;
  execs: ProcessState[];
  /** Its OOM watch (version 2 on); none: the next program watches anew. */
  oom?: OomHandover | null;
}

export interface ConnectionState {
  fd: number;
  lastRequestId: number;
  /** base64 */ input: string;
}

export interface EventState {
  seq: number;
  namespace: string;
  topic: string;
  typeUrl: string;
  /** base64 */ value: string;
  at: number;
  atNanos: number;
}

export interface RpcCallState {
  count: number;
  errors: number;
  totalMs: number;
  buckets: number[];
}

export interface UpgradeState {
  version: number;
  /** The build that wrote the state: where a failed upgrade falls back to. */
  from: { version: string; revision: string; entry: string };
  /** The build asked for. */
  to: { entry: string; version: string };
  writtenAt: number;
  /** Set by a new build that could not restore: the old build restores instead and reports this. */
  fallbackReason?: string;
  daemon: {
    startedAt: number;
    socket: string;
    namespace: string;
    group: string;
    listenFd: number;
    /** The metrics endpoint's listening socket (version 2 on); none: the next program opens its own. */
    metrics?: { fd: number; socket: string } | null;
    everCreated: boolean;
    shutdownRequested: boolean;
    spareRequested: boolean;
  };
  connections: ConnectionState[];
  /** The Upgrade call itself: answered by whichever build ends up running. */
  upgradeCall: { connection: number; streamId: number } | null;
  containers: ContainerState[];
  events: { pending: EventState[]; sent: number; retries: number; discarded: number; journalFailures: number };
  counters: { reaped: number; exitsPublished: number };
  rpc: [string, RpcCallState][];
}

export class StateVersionError extends Error {
  constructor(readonly found: unknown) {
    super(
      typeof found === 'number' && found > STATE_VERSION
        ? `upgrade state version ${found} is newer than this build reads (${ACCEPTED_STATE_VERSIONS.join(', ')}): a downgrade across state versions is refused`
        : `upgrade state version ${JSON.stringify(found)} is not one this build reads (${ACCEPTED_STATE_VERSIONS.join(', ')})`
    );
    this.name = 'StateVersionError';
  }
}

export function acceptsStateVersion(v: number): boolean {
  return ACCEPTED_STATE_VERSIONS.includes(v);
}

export function encodeState(s: UpgradeState): string {
  return JSON.stringify(s);
}

/**
 * Writes the state file: a new file, 0600, never through a symlink someone planted in the state
 * dir (root writes it).
 */
export function writeStateFile(file: string, s: UpgradeState): void {
  fs.rmSync(file, { force: true });
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    fs.writeFileSync(fd, encodeState(s));
  } finally {
    fs.closeSync(fd);
  }
}

function need(cond: unknown, what: string): void {
  if (!cond) throw new Error(`upgrade state: ${what}`);
}

/** Parses and checks a state; throws StateVersionError for a version this build does not read. */
export function parseState(text: string): UpgradeState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`upgrade state is not JSON: ${(e as Error).message}`);
  }
  need(raw && typeof raw === 'object', 'not an object');
  const version = (raw as { version?: unknown }).version;
  if (typeof version !== 'number' || !acceptsStateVersion(version)) throw new StateVersionError(version);
  const s = migrate(raw as UpgradeState);
  need(s.daemon && Number.isInteger(s.daemon.listenFd), 'daemon.listenFd missing');
  need(
    Array.isArray(s.connections) && s.connections.every((c) => Number.isInteger(c.fd) && typeof c.input === 'string'),
    'connections malformed'
  );
  need(Array.isArray(s.containers), 'containers missing');
  for (const c of s.containers) {
    need(
      typeof c.id === 'string' && typeof c.namespace === 'string' && typeof c.bundle === 'string',
      'container identity missing'
    );
    need(c.init && Array.isArray(c.execs), `container ${c.id}: processes missing`);
  }
  need(s.events && Array.isArray(s.events.pending), 'events missing');
  need(s.from && typeof s.from.entry === 'string', 'from.entry missing');
  return s;
}

/** Brings an older accepted version to the current shape. 1 -> 2: no OOM watch handed over. */
function migrate(s: UpgradeState): UpgradeState {
  return { ...s, version: STATE_VERSION };
}

/** Every fd the state hands over, for clearing close-on-exec. */
export function stateFds(s: UpgradeState, ioFds: (io: IoState) => number[]): number[] {
  const out = [s.daemon.listenFd, ...s.connections.map((c) => c.fd)];
  if (s.daemon.metrics) out.push(s.daemon.metrics.fd);
  for (const c of s.containers) {
    for (const p of [c.init, ...c.execs]) if (p.io) out.push(...ioFds(p.io));
    const watch = c.oom?.watch;
    if (watch && 'efd' in watch) out.push(watch.efd);
  }
  return [...new Set(out.filter((fd) => fd >= 0))];
}
