// Warm spares: a booted, idle shim that the next `start` turns into that container's daemon.
//
// Booting Node and loading the daemon costs ~200 ms, paid twice per container when `start` spawns a
// fresh daemon. A spare pays it ahead of time. bin/containerd-shim-tsshim-v2 (POSIX sh) claims one by
// making `claimed` in its directory (O_EXCL), leaves the start request in files there and rings the
// `req` fifo; the spare runs the usual start logic (group socket, reuse), answers in a line on
// `resp` (see below), and then either becomes the daemon (and spawns the next spare) or goes back to
// waiting. A daemon that began as a spare and leaves while a spare is due becomes that spare itself
// (pool-return.ts).
//
// Directory per containerd (its gRPC address): <state>/spares/<sha256(address)[:16]>/<pid>/
//   req     fifo: the sh writes the claimed directory's path and a newline
//   claimed made with O_EXCL by whoever takes the spare: a start (the sh's noclobber redirection, a
//           builtin) or the spare as it retires (and whoever removes what a dead one left): one
//           of them makes it, the others fail and keep off
//   resp    fifo: the spare holds it open (read-write) from the moment it waits; the sh opens it to
//           read before it rings, so the spare's answer line (`<status> fmt <format>|file`) or,
//           should the spare die, end-of-file comes without a timeout process. A spare that does
//           not answer within TSSHIM_SPARE_ANSWER_TIMEOUT seconds (stopped, wedged) is killed by
//           the sh, which then leaves the start to Node
// Files the sh leaves in the claimed directory: argv (NUL separated), cwd (the bundle), ppid
// (containerd's pid), startpid (the claiming start's own pid: a cold daemon would inherit its
// cgroups, limits, nice). The rest the spare takes from the waiting start itself, so that the sh
// forks nothing for it: its environment (/proc/<startpid>/environ) and stdin (options or
// BootstrapParams, which the sh keeps on fd 3 while it waits: /proc/<startpid>/fd/3; copied to
// `stdin` before anything else, for the sh's fall-back to Node; `.stdin` alone: it was being read).
// The answer comes in the line itself, as a printf format the sh prints with its builtin (`fmt`),
// or in `out` when it is too long for one atomic line (`file`): only the sh writes to containerd's
// pipe, so a spare answering after the sh gave up on it cannot add to Node's answer. Before it
// answers, the spare moves the directory to `<dir>.answered.<start pid>` (for `file`, the sh prints
// from there and removes it): the spare may wait under its own name again meanwhile. A cold
// start's sh (cold_start) hands the daemon its request directly instead (runCold).
//
// Lifetime: spares exist only while a shim of the same containerd serves containers. Each serving
// daemon keeps a `.serving-<pid>` marker in the pool; the last one to leave stops the spares, and a
// spare that sees no live serving shim, or whose containerd no longer answers on its socket (the
// socket file outlives containerd), retires by itself within seconds.
//
// Installs: a spare runs the code it booted with. When tsshim is rebuilt or installed anew under it
// (SpareRole.installChanged: the bundle file is another one), it retires within a second, and a
// start that claims it before that gets a daemon started from the new install, as a cold start
// would; the next spare then boots from the new install too.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { mkfifo, setChildSubreaper } from '../sys/libc';
import { notPoolClean, poolReturnRefusal, spareSnapshot } from './pool-return';
import { setProcessTitle } from './proc-title';
import { sha256Hex } from '../sys/sha256';
import type { ShimFlags } from './flags';
import { parseFlags } from './flags';
import { daemonNodeArgs, nodeChildEnv } from './node-flags';
import { dropRelativeLibraryDirs } from '../sys/library-path';
import { DEFAULT_STATE_DIR, readConfig, type ShimConfig } from './config';
import {
  adoptStartIdentity,
  copyRlimitsOf,
  copySchedulingOf,
  ENV_ROOM_BYTES,
  ENV_ROOM_VAR,
  leaveIdleScheduling,
  ownChildRunning,
  replaceEnv,
  rewriteProcEnviron,
  setNiceOfAllThreads,
  spawnOutsideShims,
} from './spare-identity';

const SPARE_NICE = 10;
/** The nice value a spare was launched with: a lower one means a start promoted it (runSpare). */
const LAUNCH_NICE_VAR = 'TSSHIM_SPARE_LAUNCH_NICE';
/** A spare whose warm-up a waiting start cut short collects this long after it went to the pool. */
const UNCLAIMED_CLEANUP_MS = 500;

export function sparePool(grpcAddress: string, stateDir = DEFAULT_STATE_DIR): string {
  const hash = sha256Hex(grpcAddress).slice(0, 16);
  return path.join(stateDir, 'spares', hash);
}

/**
 * /proc files are read as UTF-8 here: Node 20 reads those in C++ and hands back the string alone.
 * Any other encoding goes through its JavaScript path, which reads a file whose stat size is 0 into
 * freshly allocated Buffers (~16 KiB of ArrayBuffer memory per read of /proc/<pid>/stat, measured),
 * freed only when a collection finds them. A waiting spare checks every serving shim each second
 * (servingShims): with 8 of them its anonymous memory grew from 14.3 to 17.4 MiB in 60 s (with
 * UTF-8: 11.5-12.3 MiB throughout). The checks look at ASCII only (a state letter after the last
 * ')', a command-line prefix), which both decodings give alike.
 */
const PROC_TEXT = 'utf8';

/** Runs: exists and is not a zombie (a spare's parent may be an init that reaps late). */
const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, PROC_TEXT);
    return !/^[ZXx]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false; // no such process
  }
};

/** The file that marks a spare's directory as taken (see the top of this file). */
const CLAIM_FILE = 'claimed';

/** Takes the spare directory `dir` (O_EXCL); false when a start or the spare itself took it first. */
function claimSpareDir(dir: string): boolean {
  try {
    fs.closeSync(fs.openSync(path.join(dir, CLAIM_FILE), 'wx', 0o600));
    return true;
  } catch {
    return false; // taken already, or the directory is gone
  }
}

const claimedDir = (dir: string) => fs.existsSync(path.join(dir, CLAIM_FILE));

/**
 * Removes a spare directory that is ours (claimed by us, or answered): renamed out of the sh's sight
 * first, for a recursive removal may take `claimed` away before the rest, and a start would then
 * claim a directory that is going.
 */
function discardSpareDir(dir: string): void {
  const gone = path.join(path.dirname(dir), `.gone-${path.basename(dir)}-${process.pid}`);
  try {
    fs.renameSync(dir, gone);
  } catch {
    return; // gone already
  }
  fs.rmSync(gone, { recursive: true, force: true });
}

/** Claims the spare directory `dir` and removes it; false, leaving it, when a start took it first. */
function removeUnclaimedSpareDir(dir: string): boolean {
  if (!claimSpareDir(dir)) return false;
  discardSpareDir(dir);
  return true;
}

/** Live spares waiting in the pool (directories named by pid whose process exists, not claimed). */
export function waitingSpares(pool: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(pool);
  } catch {
    return [];
  } // no pool yet: no spares
  return names
    .filter((n) => /^\d+$/.test(n) && !claimedDir(path.join(pool, n)))
    .map(Number)
    .filter(alive);
}

/** Spares still booting: `.booting-<pid>` markers (hidden from the sh's claim loop). */
function bootingSpares(pool: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(pool);
  } catch {
    return [];
  } // no pool yet: none booting
  return names
    .filter((n) => /^\.booting-\d+$/.test(n))
    .map((n) => Number(n.slice(9)))
    .filter((pid) => {
      if (alive(pid)) return true;
      fs.rmSync(path.join(pool, `.booting-${pid}`), { force: true });
      return false;
    });
}

/**
 * A burst of starts: the pool holds two spares from a start that had to wait for one (or went
 * without) until no start has come for this long. Starts further apart find the one spare booted
 * again (each daemon boots the next within SPARE_MAX_DEFER_MS of its Start, ~0.3 s of Node boot
 * after that), so a second spare only pays while starts come closer than that; once the node is
 * quiet it is ~13 MiB PSS for nothing (it used to stay 30 s after the last wait:
 * bench/results/2026-12-03-spare.md).
 */
export const BURST_GAP_MS = 2000;

/** A start had to wait for a spare, or went without one (the sh marks the first case). */
function markStarved(pool: string): void {
  try {
    fs.writeFileSync(path.join(pool, '.starved'), '');
  } catch {
    /* the pool is gone (no shim serves anymore): nothing to keep two spares for */
  }
}

/** Milliseconds of the current burst left (no start for BURST_GAP_MS ends it); 0 when there is none. */
export function burstLeftMs(pool: string, now = Date.now()): number {
  try {
    return Math.max(0, fs.statSync(path.join(pool, '.starved')).mtimeMs + BURST_GAP_MS - now);
  } catch {
    return 0; // no .starved marker: no start has waited
  }
}

/** One spare normally; two while a burst of starts lasts (see BURST_GAP_MS). */
export function spareTarget(pool: string, now = Date.now()): number {
  return burstLeftMs(pool, now) > 0 ? 2 : 1;
}

/**
 * A spare was claimed: during a burst the start extends it (the second spare stays while starts
 * keep coming, also those that did not have to wait); outside one it starts none.
 */
export function continueBurst(pool: string, now = Date.now()): void {
  if (burstLeftMs(pool, now) === 0) return;
  try {
    fs.utimesSync(path.join(pool, '.starved'), now / 1000, now / 1000);
  } catch {
    /* gone meanwhile: the burst is over */
  }
}

/**
 * Why files in the pool cannot be trusted ('' when they can): each of the state dir, its spares/ and
 * the pool that exists must be a real directory, ours, writable by nobody else.
 */
export function untrustedState(pool: string): string {
  const euid = process.geteuid?.() ?? 0;
  const spares = path.dirname(pool);
  for (const dir of [path.dirname(spares), spares, pool]) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch {
      continue;
    } // not created yet: nothing in it to distrust
    if (!st.isDirectory()) return `${dir} is not a directory`;
    if (st.uid !== euid) return `${dir} is owned by uid ${st.uid}, not ${euid}`;
    if (st.mode & 0o022) return `${dir} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`;
  }
  return '';
}

const SERVING = '.serving-';

function isShimProcess(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, PROC_TEXT).startsWith('containerd-shim-tsshim-v2');
  } catch {
    return false; // no such process
  }
}

/** Live daemons of this pool's containerd that serve containers (stale markers are removed). */
export function servingShims(pool: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(pool);
  } catch {
    return [];
  } // no pool yet: no serving markers
  return names
    .filter((n) => n.startsWith(SERVING) && /^\d+$/.test(n.slice(SERVING.length)))
    .map((n) => Number(n.slice(SERVING.length)))
    .filter((pid) => {
      if (alive(pid) && isShimProcess(pid)) return true;
      fs.rmSync(path.join(pool, `${SERVING}${pid}`), { force: true });
      return false;
    });
}

/** A daemon that serves containers registers, so that spares of its containerd may live. */
export function enterServing(pool: string, pid = process.pid): void {
  if (untrustedState(pool)) return;
  fs.mkdirSync(pool, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(pool, `${SERVING}${pid}`), '');
}

/**
 * A daemon is going: when it was the last serving shim of its containerd, the spares go with it.
 * Returns true when other shims still serve (the next container may then need a spare).
 */
export function leaveServing(pool: string): boolean {
  fs.rmSync(path.join(pool, `${SERVING}${process.pid}`), { force: true });
  if (servingShims(pool).length > 0) return true;
  stopSpares(pool);
  return false;
}

/** How long a daemon's RPCs must have been quiet before it boots the next container's spare. */
export const SPARE_QUIET_MS = 100;
/** RPCs postpone that boot by this much at most after the Start that asked for it. */
export const SPARE_MAX_DEFER_MS = 1000;

/**
 * When a daemon boots the spare for the next container: once per daemon, after its first Start.
 * Booting right after Start (a launch that blocks the loop for a few ms, then ~250 ms of Node CPU)
 * landed on the container's exit and Delete: in `ctr run --rm`, Start -> /tasks/exit took ~19 ms
 * and Delete ~38 ms against ~4 and ~18 ms for a pod-grouped shim, which boots nothing (load ~9).
 * So the boot waits until no RPC came for `quietMs` (at most `maxDeferMs` after the Start), or
 * until the daemon leaves (leave(); it boots the spare once its Shutdown is answered).
 * `launch` returns false when it cannot launch now (a runc of ours runs: spawnOutsideShims needs a
 * moment without one): the boot stays due, is tried again at the next quiet moment, and a daemon
 * that leaves before one came still boots it. A CRI pod stopped right after its StartContainer had
 * runc running at every try: the daemon left with its spare never booted, and the next pod started
 * cold. Retrying every 10 ms regardless of RPCs booted it sooner, but in the middle of the pod's own
 * CreateContainer and StartContainer (1.0-1.35x Go's against 0.8-1.1x, 3 runs of the CRI suite).
 */
export class SpareLaunch {
  /** The spare was booted (or booting it was attempted). */
  launched: boolean;
  private readonly quietMs: number;
  private readonly maxDeferMs: number;
  private requested = false;
  private requestedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly launch: () => boolean,
    opts: { launched?: boolean; quietMs?: number; maxDeferMs?: number } = {}
  ) {
    this.launched = opts.launched ?? false;
    this.quietMs = opts.quietMs ?? SPARE_QUIET_MS;
    this.maxDeferMs = opts.maxDeferMs ?? SPARE_MAX_DEFER_MS;
  }

  /** Waiting for a quiet moment. */
  get pending(): boolean {
    return this.requested && !this.launched;
  }

  /** A container of this daemon started. */
  started(): void {
    if (this.launched || this.closed || this.requested) return;
    this.requested = true;
    this.requestedAt = Date.now();
    this.arm();
  }

  /** An RPC was answered: a pending boot waits for the next quiet moment. */
  activity(): void {
    if (this.pending && !this.closed) this.arm();
  }

  /** The daemon leaves: returns true when the spare is still to be booted (by the caller). */
  leave(): boolean {
    this.closed = true;
    clearTimeout(this.timer);
    return !this.launched;
  }

  private arm(): void {
    const left = this.requestedAt + this.maxDeferMs - Date.now();
    this.fireIn(Math.max(0, Math.min(this.quietMs, left)));
  }

  private fireIn(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), ms);
    this.timer.unref();
  }

  private fire(): void {
    if (this.launched || this.closed) return;
    // Not now: the next quiet moment (RPCs postpone it again, as before the first try).
    if (!this.launch()) return this.fireIn(this.quietMs);
    this.launched = true;
  }
}

/** Ends every waiting and booting spare of the pool (a spare claimed meanwhile keeps its claim). */
export function stopSpares(pool: string): void {
  for (const pid of [...waitingSpares(pool), ...bootingSpares(pool)]) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    fs.rmSync(path.join(pool, `.booting-${pid}`), { force: true });
  }
  fs.rmSync(path.join(pool, '.starved'), { force: true });
  sweepDeadSpares(pool);
  try {
    fs.rmdirSync(pool);
  } catch {
    /* a spare still leaving, or a shim arriving */
  }
}

/**
 * Removes what spares that are gone left in the pool: a directory (`<pid>`, or `.new-<pid>` half
 * built) or a booting marker whose process no longer runs. A spare cleans up after itself on every
 * exit it sees; one killed outright (SIGKILL, a crash) cannot, and its entry would keep the pool
 * (CI on 2.2.7 found a `.new-<pid>` left after the last container, its process gone). A claimed
 * directory is the claiming start's (it may still read the request from it), and stays, as does
 * `<pid>.answered.<start pid>`.
 */
export function sweepDeadSpares(pool: string): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync(pool);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^(\.new-|\.booting-)?(\d+)$/.exec(name);
    if (!m || alive(Number(m[2]))) continue;
    const entry = path.join(pool, name);
    // A spare's directory only once it is ours: a start may have claimed it as the spare died.
    if (m[1]) fs.rmSync(entry, { recursive: true, force: true });
    else removeUnclaimedSpareDir(entry);
  }
}

/**
 * Starts spares for this containerd until spareTarget are waiting or booting. Returns false when it
 * cannot now: a runc of ours runs, and spawnOutsideShims needs a moment without one (the caller
 * tries again); true when done, also when nothing was to be started.
 */
export function ensureSpare(mainScript: string, flags: ShimFlags, config: ShimConfig): boolean {
  const pool = sparePool(flags.address, config.stateDir);
  if (!config.spares || untrustedState(pool) || servingShims(pool).length === 0) return true;
  if (ownChildRunning()) return false;
  const missing = spareTarget(pool) - waitingSpares(pool).length - bootingSpares(pool).length;
  for (let i = 0; i < missing; i++) startSpare(mainScript, flags, pool, config.snapshot);
  // The last serving shim may have left between the check above and the spare's booting marker
  // (written before startSpare returns): then its stopSpares missed the spare, and this must not.
  if (missing > 0 && servingShims(pool).length === 0) stopSpares(pool);
  return true;
}

function startSpare(mainScript: string, flags: ShimFlags, pool: string, snapshot: boolean): void {
  // Linux shows process.title only within the original argv's bytes: reserve room for the daemon's.
  const room = '.'.repeat(256);
  const argv = [
    process.execPath,
    ...daemonNodeArgs(mainScript, snapshot), // with the build's V8 snapshot when configured and there is one
    '-namespace',
    flags.namespace,
    '-address',
    flags.address,
    '-title-space',
    room,
    'spare',
  ];
  // The environment block is reserved the same way: the claiming start's environment replaces it.
  const env = nodeChildEnv({
    ...process.env,
    [ENV_ROOM_VAR]: '.'.repeat(ENV_ROOM_BYTES),
    [LAUNCH_NICE_VAR]: String(Math.min(19, os.getPriority() + SPARE_NICE)),
  });
  // A spare boots while a container starts, exits and is deleted, and while the next ones are
  // created: its ~250 ms of CPU must not compete with them. As root it boots under SCHED_IDLE (it
  // leaves it once warm, see runSpare; a start that has to wait for it promotes it, see
  // bin/containerd-shim-tsshim-v2); without CAP_SYS_NICE it could never leave it: niced only.
  fs.mkdirSync(pool, { recursive: true, mode: 0o700 });
  spawnOutsideShims(argv, env, SPARE_NICE, pool, process.geteuid?.() === 0);
}

interface StartRequest {
  dir: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  stdin: Buffer;
  containerdPid: number;
  startPid: number;
}

const nulSeparated = (text: string) => text.split('\0').filter((s) => s !== '');

/** A file of the request, or null when the sh left it to us (no such file). */
function requestFile(dir: string, file: string): Buffer | null {
  try {
    return fs.readFileSync(path.join(dir, file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Where a sh waiting for a spare keeps its stdin (bin/containerd-shim-tsshim-v2 ring_spare): fd 0
 * is moved about by the builtins it runs meanwhile.
 */
const START_STDIN_FD = 3;

/**
 * The waiting start's stdin, read through /proc (a pipe from containerd, or /dev/null), and kept in
 * `stdin` at once: if this process fails afterwards, the sh hands it to Node instead. `.stdin` is
 * made before the pipe is read: should this process end (or be killed) before `stdin` exists, the
 * sh knows the pipe may be partly read and fails the start instead of giving Node half a request.
 */
function takeStartStdin(dir: string, startPid: number): Buffer {
  const tmp = path.join(dir, '.stdin');
  const out = fs.openSync(tmp, 'wx', 0o600);
  let data: Buffer;
  try {
    const fd = fs.openSync(`/proc/${startPid}/fd/${START_STDIN_FD}`, fs.constants.O_RDONLY);
    try {
      data = fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.writeFileSync(out, data);
  } finally {
    fs.closeSync(out);
  }
  // Whole or not at all: the sh's fall-back to Node takes the file when it is there.
  fs.renameSync(tmp, path.join(dir, 'stdin'));
  return data;
}

/** The claiming sh still runs as `start` under that pid (not a pid recycled since): its stdin is ours to read. */
function isWaitingStart(pid: number): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    return argv.some((a) => /(^|\/)containerd-shim-tsshim-v2$/.test(a)) && argv.at(-2) === 'start';
  } catch {
    return false; // gone
  }
}

/**
 * A start's environment block (NUL-separated K=V) as its daemon takes it on: less relative
 * LD_LIBRARY_PATH entries, as the sh and main.ts leave a cold daemon's (sys/library-path.ts).
 */
export function startEnvironment(block: Buffer): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const kv of nulSeparated(block.toString('utf8'))) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  dropRelativeLibraryDirs(env);
  return env;
}

function readRequest(dir: string, startPid: number): StartRequest {
  const text = (file: string) => fs.readFileSync(path.join(dir, file), 'utf8');
  if (!startPid || !isWaitingStart(startPid)) throw new Error(`claim: the start (pid ${startPid}) is gone`);
  return {
    dir,
    argv: nulSeparated(text('argv')),
    env: startEnvironment(requestFile(dir, 'env') ?? fs.readFileSync(`/proc/${startPid}/environ`)),
    cwd: text('cwd').trim(),
    stdin: requestFile(dir, 'stdin') ?? takeStartStdin(dir, startPid),
    containerdPid: Number(text('ppid').trim()) || 0,
    startPid,
  };
}

/** True when something accepts connections on containerd's socket, false when nothing does. */
function containerdAnswers(socket: string): Promise<boolean> {
  // The kernel's table says so without a connection (see listensOn); only when it does not (the
  // socket not listed: containerd gone, or bound under another spelling of the path) a connect decides.
  if (listensOn(socket)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    const done = (answers: boolean) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(answers);
    };
    // A slow answer is not a missing containerd: only a refusal (or no socket at all) counts.
    const timer = setTimeout(() => done(true), 5000);
    conn.once('connect', () => done(true));
    conn.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT'));
  });
}

/** Where listensOn reads the table (one buffer for the life of the process) and what it looks for. */
let unixTable: Buffer | null = null;
let listenNeedle: { socket: string; bytes: Buffer } | null = null;
const LISTENING_FLAGS = Buffer.from(' 00010000 '); // __SO_ACCEPTCON: a listening socket
const NEWLINE = 0x0a;

/**
 * True when /proc/net/unix (unix sockets of this network namespace, a line each:
 * `<num>: <refcount> <protocol> <flags> <type> <state> <inode> <path>`) lists a listening socket
 * bound at `socket`. A waiting spare asks every WATCH_MS whether its containerd still runs: a
 * connection to containerd's socket each time paged Node's net and stream code back in after the
 * spare's trim (+0.4-0.8 MiB PSS, bench/results/2026-12-03-mem2.md) and cost CPU; this reads the
 * table into one reused buffer with the same few fs calls the other checks make. False also when
 * the table cannot be read.
 */
export function listensOn(socket: string, table = '/proc/net/unix'): boolean {
  if (listenNeedle?.socket !== socket) listenNeedle = { socket, bytes: Buffer.from(` ${socket}\n`) };
  const needle = listenNeedle.bytes;
  const buf = (unixTable ??= Buffer.allocUnsafe(64 * 1024));
  let fd: number;
  try {
    fd = fs.openSync(table, 'r');
  } catch {
    return false; // no /proc: the caller connects instead
  }
  try {
    let kept = 0; // an incomplete last line, moved to the front for the next read
    for (;;) {
      const end = kept + fs.readSync(fd, buf, kept, buf.length - kept, null);
      if (end === kept) return false;
      // A match ends with its newline: it lies within the complete lines of [0, end).
      for (let at = buf.indexOf(needle); at >= 0 && at + needle.length <= end; at = buf.indexOf(needle, at + 1)) {
        const flags = buf.indexOf(LISTENING_FLAGS, buf.lastIndexOf(NEWLINE, at) + 1);
        if (flags >= 0 && flags < at) return true;
      }
      const lineStart = buf.lastIndexOf(NEWLINE, end - 1) + 1;
      kept = end - lineStart;
      if (kept === buf.length) kept = 0; // a line longer than the buffer is no socket of ours
      buf.copy(buf, 0, lineStart, end);
    }
  } catch {
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * How often a waiting spare looks for what ends it without telling it: its containerd gone, the last
 * serving shim killed outright, a new install of tsshim. Everything else reaches it at once: a claim
 * on the `req` fifo, stopSpares by SIGTERM, the end of a burst by its own timer. Each look costs a
 * sleeping spare a wake-up and a few /proc and fs reads (its containerd's socket in /proc/net/unix,
 * which grows with the node's unix sockets); every second that was ~1 ms of CPU per second and kept
 * its heap growing (~4 KiB/s) for a process that is there to wait.
 */
const WATCH_MS = 5000;
/** A claim (the sh made `claimed` in our dir) whose request never came: the sh died; we go too. */
const CLAIM_WITHOUT_REQUEST_MS = 15_000;

/** Set by SIGTERM (stopSpares): retire at the next chance unless a claim is already ours. */
let retireRequested = false;
let onRetireRequest: (() => void) | null = null;
/** Our end of the `resp` fifo of the directory we wait in (see waitForClaim and deliverAnswer). */
let heldResp = -1;

/**
 * Registers in the pool and resolves with the claimed directory, or null when the spare retires:
 * after the idle timeout, when asked to (SIGTERM), when no shim of its containerd serves anymore,
 * or when its containerd is gone. A spare never outlives its daemon nor the last serving shim.
 */
function waitForClaim(
  pool: string,
  grpcAddress: string,
  idleMs: number,
  installChanged: () => boolean
): Promise<string | null> {
  const home = path.join(pool, String(process.pid));
  // The sh's warm path takes a spare's presence as the proof that its pool is ours alone (it checks
  // ownership only, bin/containerd-shim-tsshim-v2 fast_start): never wait in one that is not.
  if (untrustedState(pool)) return Promise.resolve(null);
  // Built under a hidden name and renamed into place: the sh only ever sees complete spares.
  const building = path.join(pool, `.new-${process.pid}`);
  fs.rmSync(building, { recursive: true, force: true });
  fs.mkdirSync(building, { recursive: true, mode: 0o700 });
  // Through libc: mkfifo(1) by execFileSync forked this process, ~7 ms of wall time and ~3.5 ms of
  // CPU per FIFO in a process of a shim's size, 0.03 ms this way; a start waiting for this spare
  // waited for those too. chmod: the umask may have taken more than 077.
  for (const f of ['req', 'resp']) {
    mkfifo(path.join(building, f), 0o600);
    fs.chmodSync(path.join(building, f), 0o600);
  }
  fs.renameSync(building, home);
  fs.rmSync(path.join(pool, `.booting-${process.pid}`), { force: true });
  // O_RDWR: opening never blocks and our own write end keeps the fifo from reporting EOF.
  const fd = fs.openSync(path.join(home, 'req'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  // Held from now on: a claiming sh reads our answer line from it, or end-of-file once we are gone.
  heldResp = fs.openSync(path.join(home, 'resp'), fs.constants.O_RDWR);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  return new Promise((resolve) => {
    let buf = '';
    let claimedSince = 0;
    let asking = false;
    let burstEnd: NodeJS.Timeout | undefined;
    // The sh claims by making `claimed` in our dir; retiring makes it too, so exactly one of them wins.
    const retire = () => {
      if (!removeUnclaimedSpareDir(home)) return; // claimed: the request is on its way
      try {
        fs.rmdirSync(pool);
      } catch {
        /* other spares or shims still there */
      }
      done(null);
    };
    const done = (dir: string | null) => {
      clearTimeout(idle);
      clearTimeout(burstEnd);
      clearInterval(watch);
      sock.destroy();
      onRetireRequest = null;
      resolve(dir);
    };
    const idle = setTimeout(retire, idleMs);
    const check = () => {
      // Claimed, or our directory gone from under us: either way not ours to wait in anymore.
      if (claimedDir(home) || !fs.existsSync(home)) {
        claimedSince ||= Date.now();
        if (Date.now() - claimedSince > CLAIM_WITHOUT_REQUEST_MS) {
          discardSpareDir(home); // the claim's, but nobody is left to remove it
          done(null);
        }
        return;
      }
      if (retireRequested || installChanged() || untrustedState(pool) || servingShims(pool).length === 0)
        return retire();
      // A burst is over: the extra spare (the newest, so only one of them) goes. While it lasts, the
      // extra one checks again the moment it ends rather than up to WATCH_MS later.
      const waiting = waitingSpares(pool);
      if (waiting.length > 1 && Math.max(...waiting) === process.pid) {
        const left = burstLeftMs(pool);
        if (left === 0) return retire();
        clearTimeout(burstEnd);
        burstEnd = setTimeout(check, left + 10);
      }
      if (asking) return;
      asking = true;
      void containerdAnswers(grpcAddress).then((answers) => {
        asking = false;
        if (!answers) retire();
      });
    };
    const watch = setInterval(check, WATCH_MS);
    onRetireRequest = check;
    check();
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(buf.slice(0, nl));
    });
    sock.on('error', () => done(null));
  });
}

/** The answer's bytes and exit status for the start that claimed us. */
interface Answer {
  out: Uint8Array | string;
  status: number;
}

const PIPE_BUF = 4096;

/**
 * The answer as a format for the sh's printf builtin (bin/containerd-shim-tsshim-v2 ring_spare),
 * which prints exactly these bytes: printable ASCII as it is, every other byte and `\`, `%` and
 * the blank as a 3-digit octal escape. No blank or newline in it: it ends the answer line.
 */
export function answerFormat(out: Uint8Array): string {
  let fmt = '';
  for (const b of out) {
    fmt +=
      b > 0x20 && b < 0x7f && b !== 0x5c && b !== 0x25 ? String.fromCharCode(b) : '\\' + b.toString(8).padStart(3, '0');
  }
  return fmt;
}

/**
 * Answers the start that claimed us. A sh that rang over `req` waits on the `resp` we hold: it gets
 * one line, with the answer in it (`fmt`) when it fits in what a pipe takes whole (PIPE_BUF), else
 * `file` (the sh prints `out` from `<dir>.answered.<start pid>`). A cold start's sh (no held `resp`) waits for `resp` to be opened and
 * closed once `out` and `status` are written (retrying until its reader is there).
 */
async function deliverAnswer(dir: string, answer: Answer, startPid = 0): Promise<void> {
  if (heldResp >= 0) {
    const bytes = typeof answer.out === 'string' ? Buffer.from(answer.out) : answer.out;
    let line = `${answer.status} fmt ${answerFormat(bytes)}\n`;
    // Answered, the directory leaves our name before the sh hears of it: this process may wait
    // under it again (stay a spare), and no start may claim what is going.
    const answered = `${dir}.answered.${startPid}`;
    fs.renameSync(dir, answered);
    if (Buffer.byteLength(line) > PIPE_BUF) {
      fs.writeFileSync(path.join(answered, 'out'), bytes);
      line = `${answer.status} file\n`;
    }
    try {
      fs.writeSync(heldResp, line);
    } finally {
      fs.closeSync(heldResp);
      heldResp = -1;
    }
    // The sh needs nothing more from the directory unless it prints `out` (it removes it then).
    if (!line.endsWith(' file\n')) fs.rmSync(answered, { recursive: true, force: true });
    return;
  }
  fs.writeFileSync(path.join(dir, 'out'), answer.out);
  fs.writeFileSync(path.join(dir, 'status'), String(answer.status));
  const resp = path.join(dir, 'resp');
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(resp, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || Date.now() > deadline) return; // the sh gave up: it falls back to Node
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

/**
 * How a daemon that began as a spare goes back to its pool when it leaves (pool-return.ts):
 * `rejoin` is called once the daemon let go of its containers; it returns why the process may not
 * go back ('' when it went back: the daemon then returns instead of exiting). `except`: descriptors
 * the daemon still holds and closes right after (its log).
 */
export interface PoolReturn {
  pool: string;
  rejoin(except: readonly number[]): string;
}

/** What only the composition root can give a spare: the daemon it becomes, and the last steps of its boot. */
export interface SpareRole {
  /** Serve as the daemon of a claimed group, on the socket the spare bound for it. */
  becomeDaemon(flags: ShimFlags, config: ShimConfig, bound: BoundSocket, back?: PoolReturn): Promise<void>;
  /** Called once the spare is warm: e.g. write the V8 code cache while the most functions are compiled. */
  warmedUp(): void;
  /** True when tsshim was rebuilt or installed anew under this process (its bundle file is another one). */
  installChanged(): boolean;
  /** Node flags and script of a daemon started from the install now in place (as a cold start does). */
  daemonEntry: string[];
}

/** A socket handed to the daemon already bound (by a spare). */
export interface BoundSocket {
  server: net.Server;
  socket: string;
  group: string;
  /** what the spare could not take on from its start */ notes?: string[];
}

/**
 * What a spare leaving on its own leaves in the pool goes: its booting marker, its directory (whole
 * or half built; never one a start claimed: that start may still read the request from it), what
 * dead spares left (sweepDeadSpares) and the pool when that was the last entry.
 */
export function leavePool(pool: string, pid = process.pid): void {
  for (const name of [`.booting-${pid}`, `.new-${pid}`]) {
    fs.rmSync(path.join(pool, name), { recursive: true, force: true });
  }
  removeUnclaimedSpareDir(path.join(pool, String(pid)));
  sweepDeadSpares(pool);
  try {
    fs.rmdirSync(pool);
  } catch {
    /* other spares or shims still there, or gone already */
  }
}

export async function runSpare(flags: ShimFlags, role: SpareRole, config: ShimConfig): Promise<void> {
  const pool = sparePool(flags.address, config.stateDir);
  // stopSpares: leave now while booting; while waiting, retire unless claimed (waitForClaim). A spare
  // told to go while it sets up its directory must not leave it behind: stopSpares of the last
  // shim removes the pool only once it is empty.
  const onSigterm = () => {
    retireRequested = true;
    if (onRetireRequest) onRetireRequest();
    else if (!claiming) {
      leavePool(pool);
      process.exit(0);
    }
  };
  let claiming = false;
  process.on('SIGTERM', onSigterm);
  // However an unclaimed spare ends (an exception, an exit on any path), nothing of it stays in the
  // pool: the last serving shim removes the pool only once it is empty. A CI run found a `.new-<pid>`
  // left behind after the last container of its containerd.
  process.on('exit', () => {
    if (!claiming) leavePool(pool);
  });
  // Only the initial environment block needed the room (spare-identity.ts rewriteProcEnviron).
  delete process.env[ENV_ROOM_VAR];
  const launchNice = Number(process.env[LAUNCH_NICE_VAR] ?? NaN);
  delete process.env[LAUNCH_NICE_VAR];
  // The last shim left while this spare waited for a core (SCHED_IDLE): leave before the warm-up's CPU.
  if (servingShims(pool).length === 0) process.exit(0);
  // Load everything the daemon needs now, while nobody waits.
  await import('./bootstrap');
  await import('./start-options');
  await import('./start');
  const spareTitle = `containerd-shim-tsshim-v2 spare -address ${flags.address}`;
  setProcessTitle(spareTitle);
  // A start that waits for this spare promotes it (bin/containerd-shim-tsshim-v2 promote_booting:
  // nice 0, out of SCHED_IDLE), often before this runs: the spare then stops warming up and goes to
  // the pool. Launched as a pod's shim left, it was claimed ~300 ms after its launch, ~160 ms of that
  // after Node's boot: the warm-up, the claim path's and the collection (2026-12-05-spare-at-kill.md).
  const waitedFor = () => os.getPriority() < launchNice; // false when launched without the variable
  // Once its cleanup is done, a waiting spare sits at the nice value of the shim that launched it:
  // a claim wakes it on cores busy with containerd and runc, and niced its wake-up waited for
  // them. While it waits it runs a check every 5 s. (Without CAP_SYS_NICE it stays niced.)
  const waitNice = Number.isFinite(launchNice) ? Math.max(0, launchNice - SPARE_NICE) : SPARE_NICE;
  const toWaitNice = () => setNiceOfAllThreads(waitNice);
  const { warmUp } = await import('./warm-up');
  const warm = await warmUp(waitedFor);
  // Also when cut short (~24 ms then, ~4 after a whole warm-up): a waiting start would otherwise wait
  // for the same compiling during its claim.
  await warmClaimPath();
  const { collectAndTrim } = await import('./idle-gc');
  // A spare may wait for minutes: keep only what it needs resident (idle-gc.ts, trim.ts). `cleanUp`
  // calls off what of that has not run yet (see the claim below).
  let cleanUp = () => {};
  /** The collection and trim UNCLAIMED_CLEANUP_MS from now, unless a claim calls it off first. */
  const cleanUpLater = (compact: boolean) => {
    const later = setTimeout(() => (cleanUp = collectAndTrim(config.trim, compact, toWaitNice)), UNCLAIMED_CLEANUP_MS);
    cleanUp = () => clearTimeout(later);
  };
  if (warm && !waitedFor()) {
    cleanUp = collectAndTrim(config.trim, false, toWaitNice);
    // Loaded from the bundle without a code cache for these flags: this is the moment to write it
    // (not after a warm-up cut short: the cache would cover less of a first Create for every later
    // spare; the daemon this one becomes writes it as it exits instead).
    role.warmedUp();
  } else {
    // Cut short, the collection waits for the claim that is coming. It may not come: the sh
    // promotes every booting spare and its start takes one of them; a spare left so in the pool held
    // ~26 MiB of PSS instead of ~13 (10 back-to-back starts, the memory suite).
    cleanUpLater(false);
  }
  // Booted (under SCHED_IDLE, see startSpare): a claim must not wait for an idle core, a nice
  // value keeps the waiting spare's housekeeping behind the containers'.
  leaveIdleScheduling();
  const ownEnv = { ...process.env };
  // What a daemon that comes back must hold again (pool-return.ts), less the spare's own SIGTERM
  // listener: it is off while the process serves, and goes back on once it is a spare again.
  const asSpare = spareSnapshot();
  asSpare.listeners.SIGTERM--;
  let returns = 0;
  for (;;) {
    if (retireRequested) process.exit(0);
    const dir = await waitForClaim(pool, flags.address, config.spareIdleMs, () => role.installChanged());
    if (!dir || !dir.startsWith(pool + '/')) {
      leavePool(pool); // retired (done already), or the request fifo failed: nothing of ours stays
      process.exit(0);
    }
    claiming = true;
    // Claimed before its cleanup ran (a start waited for this spare): the trim would drop the pages
    // of the code its start and first calls run (in a burst it came 140-280 ms after the claim).
    // The daemon's idle collector cleans up once its calls go quiet.
    cleanUp();
    const answer = await answerClaim(dir, role);
    continueBurst(pool); // after the answer: containerd does not wait for it
    // Without closing the listener the new daemon serves (its close would unlink the socket).
    if (answer.handedOn || (!answer.become && role.installChanged())) process.exit(0);
    if (!answer.become) {
      // the group already has a shim: stay a spare
      replaceEnv(ownEnv);
      setNiceOfAllThreads(SPARE_NICE);
      claiming = false;
      continue;
    }
    process.removeListener('SIGTERM', onSigterm);
    let returned = () => {};
    const back = new Promise<void>((resolve) => (returned = resolve));
    const become = answer.become;
    await serveClaimed(become, role, {
      pool,
      rejoin: (except) => {
        const why = poolReturnRefusal(
          { returns, inShimCgroup: become.inShimCgroup, installChanged: role.installChanged() },
          () => notPoolClean(asSpare, except)
        );
        if (!why) {
          returns++;
          returned();
        }
        return why;
      },
    });
    await back; // only when the daemon came back: otherwise it exits
    // The spare it was before the claim: its title (the sh finds spares by it), environment, no
    // subreaper (no child to collect until the next claim), niced; collected and trimmed unless a
    // claim comes first.
    setProcessTitle(spareTitle);
    replaceEnv(ownEnv);
    rewriteProcEnviron(ownEnv);
    process.chdir('/');
    setChildSubreaper(false);
    setNiceOfAllThreads(SPARE_NICE);
    process.on('SIGTERM', onSigterm);
    claiming = false;
    cleanUpLater(true);
  }
}

/**
 * Answers a made-up start once, in a scratch directory (its socket bound there and closed): the
 * steps of a claim run nowhere else, so without this V8 compiles them while a start waits on the
 * answer. The socket and pool names are hashed a few times more: sha256Hex's helpers become hot on
 * about the third hash, and a daemon's V8 optimises on its main thread (--single-threaded): that
 * took 2.5-4 ms of a claim's answer (trace_marker probe, 16 claims). Failures are ignored, as in
 * the warm-up: the real claim reports its own.
 */
async function warmClaimPath(): Promise<void> {
  let scratch = '';
  try {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-warm-claim-'));
    const { readStartRequest, formatStartReply } = await import('./bootstrap');
    const { startOptions } = await import('./start-options');
    const { claimGroupSocket } = await import('./start');
    fs.writeFileSync(path.join(scratch, 'config.json'), '{"annotations":{"io.kubernetes.cri.sandbox-id":"warm"}}');
    const argv = ['-namespace', 'warm', '-address', path.join(scratch, 'c.sock'), '-id', 'warm', 'start'];
    const flags = parseFlags(argv);
    const request = readStartRequest(Buffer.alloc(0), process.env, flags);
    const opts = startOptions(request.options, flags, readConfig(process.env));
    const claimed = await claimGroupSocket(flags, opts, scratch, scratch);
    answerFormat(formatStartReply(claimed.address, request.generation));
    for (let i = 0; i < 4; i++) sparePool(`${flags.address}.${i}`);
    await new Promise((resolve) => (claimed.server ? claimed.server.close(resolve) : resolve(undefined)));
    copyRlimitsOf(process.pid); // our own limits: nothing changes
  } catch {
    /* the claim itself will say what is wrong */
  } finally {
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

interface Becoming {
  /** settleDaemon moved this process into the container's ShimCgroup (a pod's, which must be able to go). */
  inShimCgroup: boolean;
  flags: ShimFlags;
  bound: BoundSocket & { notes: string[] };
  req: StartRequest;
  problems: string[];
}

/**
 * Answers the start request left in `dir` (by the sh: bin/containerd-shim-tsshim-v2): binds the
 * group's socket or finds its shim, writes `out` and `status` there. When this process is to
 * serve the group, says how (`become`); `handedOn` when a daemon of a newer install serves it.
 */
async function answerClaim(dir: string, role: SpareRole): Promise<{ become: Becoming | null; handedOn: boolean }> {
  let claimer = 0;
  return answerRequest(role, {
    startPid: () => (claimer = Number(fs.readFileSync(path.join(dir, 'startpid'), 'utf8').trim()) || 0),
    read: (startPid) => readRequest(dir, startPid),
    deliver: (answer) => deliverAnswer(dir, answer, claimer),
  });
}

/** Where a start request comes from and its answer goes: a claimed directory, or a direct cold start's fds. */
interface RequestSource {
  /**
   * This process is the start's child (a direct cold start): it has the start's cgroups, rlimits,
   * scheduling policy and nice value already, as a daemon that Node's start spawns has. Nothing to
   * copy, and libc (koffi, ~15-25 ms to load) is not needed before the answer.
   */
  inherits?: boolean;
  startPid(): number;
  read(startPid: number): StartRequest;
  deliver(answer: Answer): Promise<void>;
}

async function answerRequest(
  role: SpareRole,
  source: RequestSource
): Promise<{ become: Becoming | null; handedOn: boolean }> {
  let out: Uint8Array | string = '';
  let status = 0;
  let become: Becoming | null = null;
  let handedOn = false;
  let startPid = 0;
  try {
    startPid = source.startPid();
    // containerd waits from here on: the start's policy and nice value first of all (a waiting
    // spare is niced: on a busy machine it crawled through the request, ~10-40 ms at load 20).
    let scheduledFrom = 0;
    try {
      if (startPid && !source.inherits) copySchedulingOf(startPid);
      scheduledFrom = startPid;
    } catch {
      /* adoptStartIdentity tries again and reports it */
    }
    const { readStartRequest, formatStartReply } = await import('./bootstrap');
    const { startOptions } = await import('./start-options');
    const { claimGroupSocket, settleDaemon, spawnDaemon } = await import('./start');
    const req = source.read(startPid);
    // Decide with the claiming start's environment (TSSHIM_PER_NODE and the like), not our own.
    replaceEnv(req.env);
    const startFlags = parseFlags(req.argv);
    const request = readStartRequest(req.stdin, req.env, startFlags);
    const startConfig = readConfig(req.env);
    const opts = startOptions(request.options, startFlags, startConfig);
    const claimed = await claimGroupSocket(startFlags, opts, req.cwd, startConfig.socketDir);
    out = formatStartReply(claimed.address, request.generation);
    if (claimed.server) {
      // Whatever a cold daemon inherits from its start, then what settleDaemon does to both.
      const from = req.startPid || req.containerdPid;
      const problems = source.inherits ? [] : adoptStartIdentity(from, from !== scheduledFrom);
      if (role.installChanged()) {
        // Our code is the old install's: the daemon comes from the new one (it inherits the
        // identity just taken on), and this process leaves once start has its answer.
        spawnDaemon(startFlags, opts, role.daemonEntry, claimed, req.containerdPid, req.cwd);
        handedOn = true;
      } else {
        settleDaemon(process.pid, opts, req.containerdPid, req.cwd, claimed.address);
        enterServing(sparePool(startFlags.address, startConfig.stateDir));
        const env = { ...req.env, TSSHIM_SOCKET: claimed.socket, TSSHIM_GROUP: claimed.group };
        become = {
          inShimCgroup: !!opts.shimCgroup,
          flags: startFlags,
          bound: { server: claimed.server, socket: claimed.socket, group: claimed.group, notes: problems },
          req: { ...req, env },
          problems,
        };
      }
    }
  } catch (e) {
    out = `containerd-shim-tsshim-v2: ${(e as Error)?.message ?? String(e)}\n`;
    status = 1;
  }
  await source.deliver({ out, status });
  return { become, handedOn };
}

/** From here on this process is the container's shim, exactly as if `start` had spawned it. */
async function serveClaimed(become: Becoming, role: SpareRole, back?: PoolReturn): Promise<void> {
  replaceEnv(become.req.env);
  if (!rewriteProcEnviron(become.req.env)) become.problems.push('environment: larger than the reserved block');
  process.chdir(become.req.cwd);
  await role.becomeDaemon(become.flags, readConfig(become.req.env), become.bound, back);
}

/**
 * A cold start without a Node `start` process: the sh found no spare, left the request in `dir`
 * (inside the spare pool, so only a trusted state dir is used) and started this process detached;
 * it answers the sh as a claimed spare would and, when the group is new, serves it. One Node boot
 * per cold container instead of two (start + daemon), and containerd's Create meets a booted shim.
 */
export async function runClaim(flags: ShimFlags, role: SpareRole, config: ShimConfig): Promise<void> {
  const dir = flags.rest[0] ?? '';
  const pool = sparePool(flags.address, config.stateDir);
  const st = (() => {
    try {
      return fs.lstatSync(dir);
    } catch {
      return null;
    }
  })(); // missing: refused below
  if (
    path.dirname(dir) !== pool ||
    !st?.isDirectory() ||
    st.uid !== (process.geteuid?.() ?? 0) ||
    untrustedState(pool)
  ) {
    throw new Error(`claim: ${JSON.stringify(dir)} is not a request directory of this containerd's spare pool`);
  }
  delete process.env[ENV_ROOM_VAR];
  // A start found no spare although shims of its containerd serve: starts are outrunning the spares
  // (each daemon boots the next one only once it went quiet, see SpareLaunch), keep two during the burst.
  if (config.spares && servingShims(pool).length > 0) markStarved(pool);
  const answer = await answerClaim(dir, role);
  if (!answer.become) process.exit(0);
  await serveClaimed(answer.become, role);
}

/** A direct cold start's fds (bin/containerd-shim-tsshim-v2 cold_start): the start's stdin, and the pipe the sh reads the answer from. */
export const COLD_STDIN_FD = 3;
export const COLD_ANSWER_FD = 4;

/**
 * A cold start with nothing to hand over in files: no spare can be waiting or booting for this
 * containerd and no shim's pid file is there, so the sh (cold_start) started this process at once,
 * detached (setsid), in the bundle, with the start's environment, its argv after ours
 * (`cold <containerd pid> <start pid> <start argv...>`), its stdin on fd 3 and the write end of a
 * pipe on fd 4 that the sh reads until it closes. On that pipe, one line each: `r <pid>` before
 * stdin is read, `s <format>` with all of it once read (the sh hands it to Node should this process
 * die before it answers), then the answer as a claimed spare gives it (`<status> fmt <format>`).
 * Neither fd may outlive the answer in anything this process starts: the sh would wait for them.
 */
export async function runCold(flags: ShimFlags, role: SpareRole, config: ShimConfig): Promise<void> {
  const [containerdPid, startPid, ...argv] = flags.rest;
  // O_CLOEXEC (Node opens every file so): no child inherits the sh's pipe, and closing it answers.
  const answerFd = fs.openSync(`/proc/self/fd/${COLD_ANSWER_FD}`, fs.constants.O_WRONLY);
  fs.closeSync(COLD_ANSWER_FD);
  delete process.env[ENV_ROOM_VAR];
  const env = { ...process.env };
  const readStdin = (): Buffer => {
    fs.writeSync(answerFd, `r ${process.pid}\n`);
    let data: Buffer;
    try {
      data = fs.readFileSync(COLD_STDIN_FD);
    } finally {
      fs.closeSync(COLD_STDIN_FD);
    }
    fs.writeSync(answerFd, `s ${answerFormat(data)}\n`);
    return data;
  };
  const answer = await answerRequest(role, {
    inherits: true,
    startPid: () => Number(startPid) || 0,
    read: (pid) => ({
      dir: '',
      argv,
      env,
      cwd: process.cwd(),
      stdin: readStdin(),
      containerdPid: Number(containerdPid) || 0,
      startPid: pid,
    }),
    deliver: async ({ out, status }) => {
      const bytes = typeof out === 'string' ? Buffer.from(out) : out;
      try {
        fs.writeSync(answerFd, `${status} fmt ${answerFormat(bytes)}\n`);
      } finally {
        fs.closeSync(answerFd);
      }
    },
  });
  // As runClaim: a cold start while shims of its containerd serve means starts outrun the spares.
  const pool = sparePool(flags.address, config.stateDir);
  if (config.spares && !untrustedState(pool) && servingShims(pool).length > 0) markStarved(pool);
  if (!answer.become) process.exit(0);
  await serveClaimed(answer.become, role);
}
