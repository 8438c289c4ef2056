// Starting runc without forking Node. child_process.spawn forks the whole Node process: the page
// tables of its tens of MiB are copied, and afterwards every page the heap writes takes a
// copy-on-write fault (~130 faults and ~1.2 ms of our CPU per spawn, ~0.5 ms more in the child;
// bench/spawn-cost.ts). posix_spawn (libc.ts) starts the child with vfork semantics instead. The
// child is not libuv's: the Reaper collects its exit and hands it to this object only (never to
// the exit subscribers), so every status still reaches its owner.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { constants as osConstants } from 'node:os';
import { close, pipe2, posixSpawn, waitpidNoHang } from './libc';

/**
 * "K=V" strings of an environment object, remembered per object: the runc client passes the same
 * one on every call (copying ~30 variables into strings per runc call showed in profiles). Callers
 * do not change an environment object after handing it over.
 */
const envCache = new WeakMap<NodeJS.ProcessEnv, readonly string[]>();
export function envStrings(env: NodeJS.ProcessEnv): readonly string[] {
  let out = envCache.get(env);
  if (!out) {
    out = Object.entries(env)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`);
    // process.env is live (anyone may set a variable): never remembered.
    if (env !== process.env) envCache.set(env, out);
  }
  return out;
}

/** A child's stdio slot: an fd to hand over, 'ignore' (/dev/null), 'pipe' or 'inherit'; 'stdout': slot 1's pipe or fd. */
export type DirectStdio = number | 'ignore' | 'pipe' | 'inherit' | 'stdout';

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals])
);

/**
 * What run() needs of a child, as child_process's ChildProcess offers it: pid (undefined when the
 * spawn failed, after which 'error' is emitted), pipes as streams, kill, 'exit' (code, signal)
 * and 'close' (exited and every pipe closed).
 */
export class DirectChild extends EventEmitter {
  pid: number | undefined;
  stdin: net.Socket | null = null;
  stdout: net.Socket | null = null;
  stderr: net.Socket | null = null;
  private exited = false;
  private closed = false;
  private openPipes = 0;
  /**
   * Keeps the event loop alive until the exit is reaped, as libuv's process handle does for a
   * ChildProcess: the SIGCHLD listener does not, and the pipes may close first.
   */
  private keepAlive: NodeJS.Timeout | undefined;

  /** Starts `path` (absolute) and registers the pid with `adopt` before anything can reap it. */
  constructor(
    path: string,
    args: readonly string[],
    opts: { env: NodeJS.ProcessEnv; cwd?: string; stdio: DirectStdio[] },
    adopt: (pid: number, onExit: (rawStatus: number) => void) => void
  ) {
    super();
    const childFds: number[] = [];
    const ours: number[] = []; // the child's ends, closed here once it has them
    const pipes: { slot: number; fd: number }[] = [];
    try {
      opts.stdio.forEach((s, slot) => {
        if (s === 'stdout') childFds.push(childFds[1]);
        else if (s === 'ignore') childFds.push(-1);
        else if (s === 'inherit') childFds.push(slot);
        else if (typeof s === 'number') childFds.push(s);
        else {
          const [r, w] = pipe2();
          const [childEnd, parentEnd] = slot === 0 ? [r, w] : [w, r];
          childFds.push(childEnd);
          ours.push(childEnd);
          pipes.push({ slot, fd: parentEnd });
        }
      });
      this.pid = posixSpawn({ path, argv: [path, ...args], env: envStrings(opts.env), cwd: opts.cwd, fds: childFds });
    } catch (e) {
      for (const p of pipes) close(p.fd);
      for (const fd of ours) close(fd);
      process.nextTick(() => this.emit('error', e));
      return;
    }
    adopt(this.pid, (raw) => this.exit(raw));
    this.keepAlive = setInterval(() => {}, 2 ** 31 - 1);
    for (const fd of ours) close(fd);
    for (const { slot, fd } of pipes) {
      const sock = new net.Socket({ fd, readable: slot !== 0, writable: slot === 0 });
      this.openPipes++;
      sock.once('close', () => {
        this.openPipes--;
        this.maybeClose();
      });
      if (slot === 0) this.stdin = sock;
      else if (slot === 1) this.stdout = sock;
      else if (slot === 2) this.stderr = sock;
      else sock.destroy(); // extra pipes are not asked for by run()
    }
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.pid === undefined || this.exited) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  private exit(raw: number): void {
    if (this.exited) return;
    this.exited = true;
    clearInterval(this.keepAlive);
    const termsig = raw & 0x7f;
    if (termsig === 0) this.emit('exit', (raw >> 8) & 0xff, null);
    else this.emit('exit', null, SIGNAL_NAMES.get(termsig) ?? null);
    this.maybeClose();
  }

  private maybeClose(): void {
    if (!this.exited || this.openPipes > 0 || this.closed) return;
    this.closed = true;
    this.emit('close');
  }
}

/** Something to Atomics.wait on, made on first use: a V8 startup snapshot is built without SharedArrayBuffer. */
let pauseCell: Int32Array | undefined;
const pause = (ms: number) => Atomics.wait((pauseCell ??= new Int32Array(new SharedArrayBuffer(4))), 0, 0, ms);

/**
 * Starts `path` (absolute) with posix_spawn, stdio on /dev/null, and waits for its exit without
 * returning to the event loop: for short helpers that must be over before anything else runs (e.g.
 * `setsid -f`, while the caller is briefly not a subreaper). The child is reaped here, so the
 * Reaper never sees it. Returns the raw wait status, or null when it was killed after `timeoutMs`.
 * Throws SysError when nothing was started.
 */
export function runToExitSync(
  path: string,
  argv: readonly string[],
  opts: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number }
): number | null {
  const env = Object.entries(opts.env)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  const pid = posixSpawn({ path, argv: [path, ...argv], env, cwd: opts.cwd, fds: [-1, -1, -1] });
  const deadline = Date.now() + opts.timeoutMs;
  // A helper like setsid -f is done in about a millisecond: poll finely, then less so.
  for (let waitMs = 0.05; ; waitMs = Math.min(waitMs * 2, 10)) {
    const r = waitpidNoHang(pid);
    if (r) return r.status;
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* exited meanwhile: reaped below */
      }
      // Collected so it leaves no zombie (gone already when someone else reaped it: ECHILD).
      for (let i = 0; i < 1000 && !waitpidNoHang(pid); i++) pause(1);
      return null;
    }
    pause(waitMs);
  }
}
