// Public shapes of the container IO module (src/task/io). The Task service builds one ProcessIO per
// init or exec process and drives it around the runc invocation.
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import type { IoHandover } from './handover-state';

/** The four stdio fields of CreateTaskRequest / ExecProcessRequest. Empty string = stream unused. */
export interface StdioConfig {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export type IoLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type IoLog = (level: IoLogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** Starts a child process; pass Reaper.spawn so the global reaper leaves logging binaries to libuv. */
export type SpawnFn = (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;

export interface ProcessIOOptions {
  /** Container id. */
  id: string;
  /** Exec id for exec processes: a logging binary then sees CONTAINER_ID=<execId>, as with the Go shim. */
  execId?: string;
  namespace: string;
  /** Options.io_uid / io_gid: owner of the container-side pipe ends (left alone when both unset). */
  ioUid?: number;
  ioGid?: number;
  log?: IoLog;
  /** How to start a `binary://` logger; default child_process.spawn. */
  spawn?: SpawnFn;
  /** Aborts waiting for a logger's ready signal or for runc's console connection. */
  signal?: AbortSignal;
  /** Working directory of a `binary://` logger; the Go shim's loggers inherit its cwd, the bundle. */
  cwd?: string;
}

/** Container-side stdio for a runc child: an fd to dup onto 0/1/2, or 'ignore' (= /dev/null). */
export type RuncStdio = number | 'ignore';

export interface ProcessIO {
  /**
   * Fds to hand to the runc child as its fds 0,1,2 (non-terminal mode); the container inherits them.
   * In terminal mode all three are 'ignore': runc's own output should be captured by the caller.
   */
  runcStdio(): RuncStdio[];
  /** Terminal mode: path to pass as `runc --console-socket`. */
  readonly consoleSocketPath?: string;
  /** Closes the shim's copies of the container-side fds; call once runc create/exec/restore returned. */
  afterRuncStarted(): Promise<void>;
  /**
   * Terminal mode: takes the pty master runc sent and starts copying both ways. No-op otherwise.
   * May be called while runc is still running; waits without a time limit (like the Go shim's
   * accept) until runc connects, opts.signal aborts, or close() is called (then it rejects).
   * Its rejection never counts as unhandled, so it is safe to drop the promise after a runc failure.
   */
  receiveConsole(): Promise<void>;
  /**
   * ResizePty: TIOCSWINSZ on the pty master (ws_row = height, ws_col = width). Before the master
   * arrived the size is kept and applied the moment it does; without a terminal it does nothing.
   */
  resize(width: number, height: number): void;
  /** CloseIO: closes the stdin keep-alive writer; stdin ends once the client's writer is gone too. */
  closeStdin(): void;
  /**
   * Resolves true once stdout and stderr were copied to EOF of the container side, or false when
   * timeoutMs passed first (the rest keeps flowing until close()).
   */
  waitDrained(timeoutMs?: number): Promise<boolean>;
  /** Whether waitDrained would resolve true at once: every output copy has finished. */
  outputDrained(): boolean;
  /** Releases everything: fifos, pipes, console, logging binary (SIGTERM, 12 s, SIGKILL). Idempotent. */
  close(): Promise<void>;
  /** In-place upgrade: the controls to hand this IO to the next process, or why it cannot be now. */
  handover?(): IoHandover | string;
}
