// Init and exec processes: identity, IO, exit status and the waiters on it. The allowed operations
// per state live in state.ts; the runc work lives in container.ts.
import { constants as osConstants } from 'node:os';
import type { ProcessIO, StdioConfig } from './io';
import type { InitState, ExecState } from './state';
import { now } from './timestamps';
import { close as closeFd, kill as killPid, pidfdOpen, pidfdSendSignal, SysError } from '../sys/libc';

const osEsrch = osConstants.errno.ESRCH;

export interface ExitInfo { status: number; at: Date; nanos: number }

export abstract class Process {
  pid = 0;
  exit: ExitInfo | null = null;
  /**
   * Exit status as soon as the reaper reported it. `exit` is set later, when the exit is published
   * (after its IO drained and in containerd's order); until then the process is already gone.
   */
  reaped: ExitInfo | null = null;
  /** Refers to the process itself, not its pid (which the kernel may give to another process). */
  private pidfd = -1;
  /** pidfd_open is not available here (Linux < 5.3, seccomp): signals fall back to kill(2). */
  private static noPidfd = false;
  private waiters: (() => void)[] = [];
  private processIO: ProcessIO | null = null;
  /** A ResizePty that came before the IO existed (Exec, ResizePty, Start): applied when it does. */
  private earlySize?: { width: number; height: number };

  get io(): ProcessIO | null { return this.processIO; }
  set io(io: ProcessIO | null) {
    this.processIO = io;
    if (io && this.earlySize) io.resize(this.earlySize.width, this.earlySize.height);
    if (io) this.earlySize = undefined;
  }

  /** ResizePty: now, or as soon as the IO (and with it the console) exists. */
  resize(width: number, height: number): void {
    if (this.processIO) this.processIO.resize(width, height);
    else this.earlySize = { width, height };
  }

  constructor(readonly containerId: string, readonly execId: string, readonly stdio: StdioConfig) {}

  /** The id containerd uses in events: the exec id, or the container id for the init. */
  get id(): string { return this.execId || this.containerId; }

  abstract get isInit(): boolean;

  /**
   * Takes hold of the process behind `pid` right after its pid became known: the caller guarantees
   * it was not reaped yet (its exit would be in the caller's exit buffer), so the pid is still its own.
   */
  holdPid(): void {
    if (this.pidfd >= 0 || this.pid <= 0 || Process.noPidfd) return;
    try {
      this.pidfd = pidfdOpen(this.pid);
    } catch (e) {
      if (e instanceof SysError && (e.code === 'ENOSYS' || e.code === 'EPERM')) Process.noPidfd = true;
      // ESRCH: already gone; signal() then reports it finished.
    }
  }

  /** The reaper reported the exit: the process is stopped from now on, its pid no longer ours. */
  markReaped(status: number): void {
    if (this.reaped === null) { const t = now(); this.reaped = { status, at: t.at, nanos: t.nanos }; }
    this.releasePid();
  }

  /** Closes the pidfd (after the exit, on delete). */
  releasePid(): void {
    if (this.pidfd < 0) return;
    try { closeFd(this.pidfd); } catch { /* already closed */ }
    this.pidfd = -1;
  }

  /**
   * Sends a signal to this process and never to another one that got its pid: through the pidfd,
   * or kill(2) only where pidfds do not exist. Throws SysError (ESRCH when it already exited).
   */
  signal(sig: number): void {
    if (this.reaped !== null || this.exit) throw new SysError('pidfd_send_signal', osEsrch, `pid ${this.pid}`);
    if (this.pidfd >= 0) pidfdSendSignal(this.pidfd, sig);
    else if (Process.noPidfd) killPid(this.pid, sig);
    else throw new SysError('pidfd_send_signal', osEsrch, `pid ${this.pid}`); // gone before we could hold it
  }

  setExited(status: number, at: Date, nanos: number): void {
    if (this.exit) return;
    this.exit = { status, at, nanos };
    this.releaseWaiters();
  }

  /** Releases Wait callers without an exit (a never-started process was deleted, or start failed). */
  releaseWaiters(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when the process exited (or was released); rejects when the signal aborts. */
  wait(signal?: AbortSignal): Promise<void> {
    if (this.exit) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => { signal?.removeEventListener('abort', onAbort); resolve(); };
      const onAbort = () => {
        const i = this.waiters.indexOf(done);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal!.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(done);
    });
  }
}

export class InitProcess extends Process {
  state: InitState = 'created';
  pausing = false;
  /** Restore options when created from a checkpoint; runc restore runs on Start. */
  checkpoint: { path: string; parent: string } | null = null;
  get isInit(): boolean { return true; }
}

export class ExecProcess extends Process {
  state: ExecState = 'created';
  constructor(containerId: string, execId: string, stdio: StdioConfig, readonly spec: Record<string, unknown>) {
    super(containerId, execId, stdio);
  }
  get isInit(): boolean { return false; }

  /**
   * Before Start the size also goes into the process spec: runc sets process.consoleSize on the pty
   * before the process runs, so even its first instruction sees it (the master comes a bit later).
   */
  override resize(width: number, height: number): void {
    if (!this.io && this.stdio.terminal) this.spec.consoleSize = { height, width };
    super.resize(width, height);
  }
}
