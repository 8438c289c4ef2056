// Init and exec processes: identity, IO, exit status, the waiters on it and the queue of the
// operations on it. The allowed operations per state live in state.ts; the runc work in container.ts.
import { constants as osConstants } from 'node:os';
import type { ProcessIO, StdioConfig } from './io';
import { execStateMachine, initStateMachine, type InitState } from './state';
import { now } from './timestamps';
import { close as closeFd, kill as killPid, pidfdOpen, pidfdSendSignal, SysError } from '../sys/libc';

const osEsrch = osConstants.errno.ESRCH;

export interface ExitInfo {
  status: number;
  at: Date;
  nanos: number;
}

/**
 * Runs the operations on one process one after the other, as the Go shim's per-process mutex does
 * (Init.mu, execProcess.mu): a Kill waits for a Start of the same process, never for another
 * process's operation. Exits never queue here. A caller whose request is cancelled (containerd's
 * deadline, a closed connection) while it waits leaves the queue without running.
 */
export class OperationQueue {
  private tail: Promise<void> = Promise.resolve();

  run<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const before = this.tail;
    let done!: () => void;
    const mine = new Promise<void>((r) => {
      done = r;
    });
    // The next caller waits for everything before it, even when this one gives up waiting.
    this.tail = before.then(() => mine);
    return (async () => {
      try {
        await waitUnlessAborted(before, signal);
        return await work();
      } finally {
        done();
      }
    })();
  }
}

function waitUnlessAborted(p: Promise<void>, signal?: AbortSignal): Promise<void> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason ?? new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = () => signal.removeEventListener('abort', onAbort);
    p.then(
      () => {
        settle();
        resolve();
      },
      (e: unknown) => {
        settle();
        reject(e);
      }
    );
  });
}

export abstract class Process {
  pid = 0;
  /** Start, Delete, Kill (and for the init Pause, Resume, Update, Checkpoint, Exec) run one at a time. */
  readonly operations = new OperationQueue();
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

  get io(): ProcessIO | null {
    return this.processIO;
  }
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

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly stdio: StdioConfig
  ) {}

  /** The id containerd uses in events: the exec id, or the container id for the init. */
  get id(): string {
    return this.execId || this.containerId;
  }

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
    if (this.reaped === null) {
      const t = now();
      this.reaped = { status, at: t.at, nanos: t.nanos };
    }
    this.releasePid();
  }

  /** Closes the pidfd (after the exit, on delete). */
  releasePid(): void {
    if (this.pidfd < 0) return;
    try {
      closeFd(this.pidfd);
    } catch {
      /* already closed */
    }
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
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
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
  readonly machine;
  constructor(
    containerId: string,
    stdio: StdioConfig,
    /** Restore options when created from a checkpoint; runc restore runs on Start. */
    readonly checkpoint: { path: string; parent: string } | null = null
  ) {
    super(containerId, '', stdio);
    this.machine = initStateMachine(checkpoint ? 'created-checkpoint' : ('created' as InitState));
  }
  get state() {
    return this.machine.state;
  }
  /** A Pause is in flight (the PAUSING status). */
  get pausing(): boolean {
    return this.machine.pending === 'pause';
  }
  get isInit(): boolean {
    return true;
  }
}

export class ExecProcess extends Process {
  readonly machine = execStateMachine();
  constructor(
    containerId: string,
    execId: string,
    stdio: StdioConfig,
    readonly spec: Record<string, unknown>
  ) {
    super(containerId, execId, stdio);
  }
  get state() {
    return this.machine.state;
  }
  get isInit(): boolean {
    return false;
  }

  /**
   * Before Start the size also goes into the process spec: runc sets process.consoleSize on the pty
   * before the process runs, so even its first instruction sees it (the master comes a bit later).
   */
  override resize(width: number, height: number): void {
    if (!this.io && this.stdio.terminal) this.spec.consoleSize = { height, width };
    super.resize(width, height);
  }
}
