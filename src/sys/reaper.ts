// The one place that collects exit statuses in the shim.
//
// Model (libuv and a subreaper sharing the children): libuv keeps reaping the children it spawned (runc, mount,
// logging binaries) with its own per-pid waitpid, so their ChildProcess objects emit 'exit' and
// close. Everything else that dies as our child - container inits and exec'd processes adopted
// through PR_SET_CHILD_SUBREAPER, orphaned grandchildren - is reaped here. On every SIGCHLD we
// list our children from /proc/self/task/*/children and waitpid(pid, WNOHANG) each pid libuv
// does not own, repeating until a pass reaps nothing. We never call waitpid(-1): it would steal
// libuv's statuses and leave those ChildProcess handles hanging forever.
import * as childProcess from 'node:child_process';
import type { ChildProcess, SpawnOptions, StdioNull, StdioPipe } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { decodeWaitStatus, peekExitedChild, setChildSubreaper, waitpidNoHang } from './libc';
import { DirectChild } from './spawn';
import { wallClockNow } from './clock';
import { type CancelTimeout, lazyTimeout } from './lazy-timeout';

export interface Exit {
  pid: number;
  /** Exit code, or 128 + signal number. */
  status: number;
  /** When the reaper collected it. */
  at: Date;
  /** Nanoseconds within the second of `at` (protobuf Timestamp.nanos), sub-ms part from hrtime. */
  atNanos: number;
  /** Same value as atNanos, for code that treats an Exit as a { at, nanos } timestamp. */
  nanos: number;
}

export type ExitSubscriber = (e: Exit) => void;

/**
 * A child's stdio slot for run(): an fd to hand over, 'ignore' (/dev/null), 'pipe' (captured) or
 * 'inherit'; for stderr also 'stdout', the very pipe or fd of stdout (one captured output in the
 * order written, as Go's CombinedOutput; RunResult.stderr stays empty).
 */
export type RunStdio = number | 'ignore' | 'pipe' | 'inherit' | 'stdout';

export interface RunOptions {
  /** Written to the child's stdin, which is then closed. Requires stdio[0] to be unset or 'pipe'. */
  input?: string | Buffer;
  /** SIGKILL the child and reject after this long (default 60 s; 0 = no deadline). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** fds 0, 1, 2 of the child. Default: stdin 'ignore' (or 'pipe' with input), stdout/stderr 'pipe'. */
  stdio?: [RunStdio?, RunStdio?, RunStdio?];
  /** Extra fds after 0-2 (fd 3, 4, ...). */
  extraFds?: number[];
  /** Aborting SIGKILLs the child and rejects (e.g. the ttrpc request was cancelled). */
  signal?: AbortSignal;
  /** How long to wait for captured output to reach EOF after the child exited (a grandchild may hold the pipe). */
  drainMs?: number;
}

export interface RunResult {
  /** Exit code; 128 + signal number if killed by a signal (like a shell). */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  pid: number;
}

/** Raised by run() when its deadline passed or it was aborted; the child has been SIGKILLed. */
export class RunTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
    readonly stdout: Buffer,
    readonly stderr: Buffer
  ) {
    super(`${command}: timed out after ${timeoutMs} ms (killed with SIGKILL)`);
    this.name = 'RunTimeoutError';
  }
}

export class RunAbortedError extends Error {
  readonly code = 'ABORT_ERR';
  constructor(
    readonly command: string,
    reason?: unknown
  ) {
    super(`${command}: aborted${reason instanceof Error ? `: ${reason.message}` : ''} (killed with SIGKILL)`);
    this.name = 'AbortError';
  }
}

function exitNow(pid: number, status: number): Exit {
  const { at, nanos } = wallClockNow();
  return { pid, status, at, atNanos: nanos, nanos };
}

const SIGNAL_NUMBERS: Record<string, number> = osConstants.signals;

/** Pids started by libuv (child_process) in this process: never ours to wait for. */
const libuvOwned = new Set<number>();
let spawnPatched = false; // declared before the call below (let is not hoisted)

// Installed as soon as this module is loaded, so children spawned before Reaper.instance() count too.
patchChildProcessSpawn();

function own(child: ChildProcess): void {
  const pid = child.pid;
  if (!pid || libuvOwned.has(pid)) return;
  libuvOwned.add(pid);
  // 'exit' fires right after libuv reaped it: the pid may be recycled from now on.
  child.once('exit', () => libuvOwned.delete(pid));
}

/**
 * Every async child_process spawn (spawn, exec, execFile, fork - in any module) goes through
 * ChildProcess.prototype.spawn. Registering the pid there, synchronously after fork and before
 * any SIGCHLD can be dispatched to JavaScript, means no libuv child is ever reaped by us, even
 * if some module forgets to use Reaper.spawn.
 */
function patchChildProcessSpawn(): void {
  if (spawnPatched) return;
  spawnPatched = true;
  const proto = childProcess.ChildProcess.prototype as unknown as { spawn: (...a: unknown[]) => unknown };
  const original = proto.spawn;
  proto.spawn = function patchedSpawn(this: ChildProcess, ...args: unknown[]) {
    const r = original.apply(this, args);
    own(this);
    return r;
  };
}

/** Reads what a pipe holds right now (libuv's fds are non-blocking: EAGAIN when empty). */
function readWithoutWaiting(stream: NodeJS.ReadableStream | null | undefined, into: Buffer[]): void {
  const fd = (stream as unknown as { _handle?: { fd?: number } } | null)?._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    let n = 0;
    try {
      n = fs.readSync(fd, buf, 0, buf.length, null);
    } catch {
      return;
    } // EAGAIN: nothing more
    if (n <= 0) return;
    into.push(Buffer.from(buf.subarray(0, n)));
  }
}

export interface ReaperOptions {
  /** Make this process PR_SET_CHILD_SUBREAPER (default true). */
  subreaper?: boolean;
  /** Source of our children's pids; tests may replace it. */
  listChildren?: () => number[];
  /**
   * Reap children that already exited right away (default true). An upgraded process (src/upgrade/)
   * says false: its exit subscribers and process table come first, then it calls reapNow().
   */
  initialReap?: boolean;
}

/** Direct children of every thread of this process (orphans may be adopted by any thread). */
export function listOwnChildren(): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch {
    return out; // no procfs: only the children waitid names (reapPeeked) can be reaped
  }
  for (const tid of tids) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/self/task/${tid}/children`, 'latin1');
    } catch {
      continue; // thread exited meanwhile
    }
    for (const s of text.split(' ')) {
      const pid = Number(s);
      if (pid > 0) out.push(pid);
    }
  }
  return out;
}

export class Reaper {
  private static singleton: Reaper | undefined;
  private readonly subscribers = new Set<ExitSubscriber>();
  private readonly listChildren: () => number[];
  private readonly peek: (() => number) | null;
  private readonly onSigchld = () => this.reapNow();
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Children run() started with posix_spawn: their exit goes to their DirectChild only. */
  private readonly direct = new Map<number, (rawStatus: number) => void>();
  /** Counters for metrics and tests. */
  readonly stats = {
    sigchld: 0,
    passes: 0,
    reaped: 0,
    delivered: 0,
    subscriberErrors: 0,
    /** exits of run()'s own children (posix_spawn) */ ownRuns: 0,
    /** follow-up sweeps armed after a listing of the children */ followUps: 0,
  };

  /** The process-wide reaper: makes us a subreaper and listens for SIGCHLD, once. */
  static instance(opts: ReaperOptions = {}): Reaper {
    if (!Reaper.singleton) Reaper.singleton = new Reaper(opts);
    return Reaper.singleton;
  }

  private constructor(opts: ReaperOptions) {
    this.listChildren = opts.listChildren ?? listOwnChildren;
    // A test that supplies its own children list also decides alone what counts as a child.
    this.peek = opts.listChildren ? null : peekExitedChild;
    patchChildProcessSpawn();
    if (opts.subreaper !== false) setChildSubreaper();
    process.on('SIGCHLD', this.onSigchld);
    // Children that died before we listened would otherwise wait for the next SIGCHLD.
    if (opts.initialReap !== false) this.reapNow();
  }

  /** Receives every exit reaped here (i.e. of processes NOT started via child_process). */
  subscribe(fn: ExitSubscriber): () => void {
    this.subscribers.add(fn);
    return () => {
      this.subscribers.delete(fn);
    };
  }

  /**
   * For children started outside child_process that have their own waiter (e.g. node-pty's
   * waitpid thread): the reaper leaves the pid alone until release(pid).
   */
  claimPid(pid: number): void {
    libuvOwned.add(pid);
  }

  releasePid(pid: number): void {
    libuvOwned.delete(pid);
  }

  /** True while a pid belongs to libuv (started with child_process and not yet reported as exited). */
  ownsByLibuv(pid: number): boolean {
    return libuvOwned.has(pid);
  }

  /** True while a child this process started itself (run() or child_process) has not been reaped. */
  startedHere(pid: number): boolean {
    return libuvOwned.has(pid) || this.direct.has(pid);
  }

  /** An exit reaped here: to the run() that started the child, or to every subscriber. */
  private collected(pid: number, raw: number): void {
    const owner = this.direct.get(pid);
    if (!owner) {
      this.deliver(exitNow(pid, decodeWaitStatus(raw)));
      return;
    }
    this.direct.delete(pid);
    this.stats.ownRuns++;
    owner(raw);
  }

  /**
   * Collects every exited child libuv does not own and fans the exits out. Called on SIGCHLD;
   * callable any time (idempotent). Loops because SIGCHLD coalesces: one signal may stand for
   * many exits, and more children may die while we work.
   */
  reapNow(): number {
    if (this.stopped) return 0;
    this.stats.sigchld++;
    // Fast path: take exited children one by one straight from the kernel. It stops at the first
    // exited child libuv owns (libuv reaps that one itself), and the scan below finds the rest.
    const peeked = this.reapPeeked();
    let total = peeked.reaped;
    while (peeked.scan) {
      this.stats.passes++;
      let reapedThisPass = 0;
      for (const pid of this.listChildren()) {
        if (libuvOwned.has(pid)) continue;
        let r;
        try {
          r = waitpidNoHang(pid);
        } catch {
          continue; // ECHILD: libuv took it between the listing and now; its status is libuv's
        }
        if (!r) continue; // still running, or already gone
        reapedThisPass++;
        this.collected(r.pid, r.status);
      }
      total += reapedThisPass;
      if (reapedThisPass === 0) break;
    }
    // /proc/<pid>/task/<tid>/children is documented as best effort while the list changes:
    // one cheap follow-up pass catches an exit a concurrent listing may have skipped. Without a
    // listing there is nothing to catch: the kernel itself said no exited child was left, and a
    // later exit brings its own SIGCHLD. So the usual exit (runc's, a container's) costs no wake-up.
    if (peeked.scan && total > 0 && !this.sweepTimer) {
      this.stats.followUps++;
      this.sweepTimer = setTimeout(() => {
        this.sweepTimer = undefined;
        this.reapNow();
      }, 200);
      this.sweepTimer.unref();
    }
    return total;
  }

  /**
   * Reaps exited children the kernel names (waitid WNOWAIT). `scan` says whether a full scan of the
   * children is still needed: the kernel named a child libuv owns (it hides any exit behind it), or
   * peeking is not available.
   */
  private reapPeeked(): { reaped: number; scan: boolean } {
    if (!this.peek) return { reaped: 0, scan: true };
    let reaped = 0;
    for (;;) {
      let pid: number;
      try {
        pid = this.peek();
      } catch {
        return { reaped, scan: true };
      } // cannot peek: the scan finds them
      if (pid <= 0) return { reaped, scan: false };
      if (libuvOwned.has(pid)) return { reaped, scan: true };
      const r = waitpidNoHang(pid);
      if (!r) return { reaped, scan: true };
      reaped++;
      this.collected(r.pid, r.status);
    }
  }

  private deliver(e: Exit): void {
    this.stats.reaped++;
    for (const fn of [...this.subscribers]) {
      try {
        fn(e);
        this.stats.delivered++;
      } catch {
        this.stats.subscriberErrors++; // one broken subscriber must not starve the others
      }
    }
  }

  /** child_process.spawn with the pid registered as libuv-owned (the reaper leaves it alone). */
  spawn(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    const child = childProcess.spawn(command, args, options);
    own(child);
    return child;
  }

  /** Runs a command to completion, capturing piped output; never races libuv for its status. */
  run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const label = [command, ...args].join(' ');
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const stdio0: RunStdio = opts.stdio?.[0] ?? (opts.input !== undefined ? 'pipe' : 'ignore');
    const stdio1: RunStdio = opts.stdio?.[1] ?? 'pipe';
    const stdio2: RunStdio = opts.stdio?.[2] ?? 'pipe';
    if (opts.input !== undefined && stdio0 !== 'pipe') {
      return Promise.reject(new Error(`${label}: input given but stdin is ${String(stdio0)}`));
    }
    if (opts.signal?.aborted) return Promise.reject(new RunAbortedError(label, opts.signal.reason));
    const stdio: (RunStdio | StdioNull | StdioPipe)[] = [stdio0, stdio1, stdio2, ...(opts.extraFds ?? [])];
    if (stdio0 === 'stdout' || stdio1 === 'stdout')
      return Promise.reject(new Error(`${label}: only stderr can be 'stdout'`));

    return new Promise<RunResult>((resolve, reject) => {
      let child: ChildProcess | DirectChild;
      try {
        // An absolute path is started with posix_spawn (no fork of Node, spawn.ts); a bare name is
        // looked up in the child's PATH by child_process.
        child = command.startsWith('/')
          ? new DirectChild(
              command,
              args,
              { env: opts.env ?? process.env, cwd: opts.cwd, stdio: stdio as RunStdio[] },
              (pid, onExit) => this.direct.set(pid, onExit)
            )
          : this.spawn(command, args, {
              env: opts.env,
              cwd: opts.cwd,
              // child_process cannot share stdout's pipe: a pipe of its own, read after stdout.
              stdio: stdio.map((s) => (s === 'stdout' ? 'pipe' : s)) as SpawnOptions['stdio'],
            });
      } catch (e) {
        reject(e);
        return;
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (d: Buffer) => out.push(d));
      child.stderr?.on('data', (d: Buffer) => err.push(d));
      let settled = false;
      let failure: Error | null = null;
      let deadline: NodeJS.Timeout | undefined;
      let cancelDrain: CancelTimeout | undefined;
      let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

      const onAbort = () => killFor(new RunAbortedError(label, opts.signal?.reason));
      const cleanup = () => {
        if (deadline) clearTimeout(deadline);
        cancelDrain?.();
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const finish = () => {
        if (settled) return;
        settled = true;
        cleanup();
        const stdout = Buffer.concat(out);
        const stderr = Buffer.concat(err);
        if (failure) {
          if (failure instanceof RunTimeoutError) {
            reject(new RunTimeoutError(label, failure.timeoutMs, stdout, stderr));
          } else reject(failure);
          return;
        }
        const { code, signal } = exitInfo!;
        const status = code ?? (signal ? 128 + (SIGNAL_NUMBERS[signal] ?? 0) : 0);
        resolve({ code: status, signal, stdout, stderr, pid: child.pid ?? 0 });
      };
      const killFor = (why: Error) => {
        if (settled || failure) return;
        failure = why;
        try {
          child.kill('SIGKILL');
        } catch {
          /* already gone */
        }
        // If it cannot die (D state) do not hang the caller forever.
        setTimeout(finish, 5000).unref();
      };

      child.once('error', (e: Error) => {
        // Spawn failure (ENOENT, EACCES): no process, no 'exit'.
        if (child.pid === undefined) {
          failure = failure ?? e;
          finish();
        }
      });
      child.once('exit', (code, signal) => {
        exitInfo = { code, signal };
        // A grandchild (e.g. a container started by runc) may keep our pipes open: give the
        // output a moment to reach EOF, then stop reading so the caller is not held hostage.
        // Lazy: the pipes mostly end in the same turn or the next (lazy-timeout.ts).
        cancelDrain = lazyTimeout(() => {
          // A starved event loop runs this timer before it polls the pipes: what the child wrote
          // before it exited may still sit in them. Take it, then stop reading.
          readWithoutWaiting(child.stdout, out);
          readWithoutWaiting(child.stderr, err);
          child.stdout?.destroy();
          child.stderr?.destroy();
          finish();
        }, opts.drainMs ?? 250);
      });
      child.once('close', () => finish());

      if (child.stdin) {
        child.stdin.on('error', () => {
          /* EPIPE when the child does not read its input */
        });
        if (opts.input !== undefined) child.stdin.end(opts.input);
        else child.stdin.end();
      }
      if (timeoutMs > 0) {
        deadline = setTimeout(
          () => killFor(new RunTimeoutError(label, timeoutMs, Buffer.alloc(0), Buffer.alloc(0))),
          timeoutMs
        );
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Listens again after stop() (an in-place upgrade given up before its exec) and reaps what waited. */
  resume(): void {
    if (!this.stopped) return;
    this.stopped = false;
    process.on('SIGCHLD', this.onSigchld);
    this.reapNow();
  }

  /** Stops listening (tests; an in-place upgrade before its exec): exited children wait as zombies. */
  stop(): void {
    this.stopped = true;
    process.removeListener('SIGCHLD', this.onSigchld);
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
  }
}

/**
 * Records every exit from the moment it is created, so a caller that learns a pid only later
 * (runc wrote the pid file after the process already died) can still claim its exit.
 * close() when done: it keeps every exit until then.
 */
export class ExitBuffer {
  private readonly exits = new Map<number, Exit>();
  private readonly waiters = new Map<number, Set<(e: Exit) => void>>();
  private readonly unsubscribe: () => void;

  constructor(reaper: Reaper = Reaper.instance()) {
    this.unsubscribe = reaper.subscribe((e) => {
      const ws = this.waiters.get(e.pid);
      if (ws && ws.size > 0) {
        this.waiters.delete(e.pid);
        for (const w of ws) w(e);
        return;
      }
      this.exits.set(e.pid, e);
    });
  }

  /** The exit of pid if it was already seen (removed from the buffer), else undefined. */
  claim(pid: number): Exit | undefined {
    const e = this.exits.get(pid);
    if (e) this.exits.delete(pid);
    return e;
  }

  /** Resolves with pid's exit, now or when it happens; rejects after timeoutMs if given. */
  wait(pid: number, timeoutMs?: number): Promise<Exit> {
    const ready = this.claim(pid);
    if (ready) return Promise.resolve(ready);
    return new Promise<Exit>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter = (e: Exit) => {
        if (timer) clearTimeout(timer);
        resolve(e);
      };
      let set = this.waiters.get(pid);
      if (!set) this.waiters.set(pid, (set = new Set()));
      set.add(waiter);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          set!.delete(waiter);
          if (set!.size === 0) this.waiters.delete(pid);
          reject(Object.assign(new Error(`no exit for pid ${pid} within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
        }, timeoutMs);
      }
    });
  }

  /** Exits seen and not yet claimed. */
  pending(): Exit[] {
    return [...this.exits.values()];
  }

  close(): void {
    this.unsubscribe();
    this.exits.clear();
  }
}
