// `binary://` logging driver (containerd's binary log URI, pkg/process/io.go in the Go shim): a logger process reads the container's stdout
// on its fd 3 and stderr on fd 4, and says "ready" on fd 5 (writes a byte or closes it).
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import * as sys from '../../sys/libc';
import { closeFdQuietly, socketOnFd, destroyAndWait } from './fds';
import type { IoLog, SpawnFn } from './types';

/** Go's binaryIOProcTermTimeout: time between SIGTERM and SIGKILL on close. */
export const LOGGER_TERM_TIMEOUT_MS = 12_000;

export interface LoggerStartOptions {
  binary: string;
  args: string[];
  containerId: string;
  namespace: string;
  /** Read ends the logger gets as fd 3 (stdout) and fd 4 (stderr). */
  stdoutFd: number;
  stderrFd: number;
  spawn?: SpawnFn;
  log?: IoLog;
  signal?: AbortSignal;
  /** Working directory (the Go shim's logger inherits the shim's cwd: the bundle). */
  cwd?: string;
}

export class BinaryLogger {
  private exited: Promise<void>;
  private hasExited = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly log?: IoLog
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        this.hasExited = true;
        resolve();
      });
      child.once('error', () => {
        this.hasExited = true;
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Starts the logger and waits for its ready signal. */
  static async start(o: LoggerStartOptions): Promise<BinaryLogger> {
    const [readyR, readyW] = sys.pipe2();
    let child: ChildProcess;
    try {
      child = (o.spawn ?? nodeSpawn)(o.binary, o.args, {
        // Only these two variables, no PATH (verified against the Go shim).
        env: { CONTAINER_ID: o.containerId, CONTAINER_NAMESPACE: o.namespace },
        stdio: ['ignore', 'ignore', 'ignore', o.stdoutFd, o.stderrFd, readyW],
        cwd: o.cwd,
        detached: false,
      });
    } catch (err) {
      closeFdQuietly(readyR);
      closeFdQuietly(readyW);
      throw new Error(`failed to start logging binary ${o.binary}: ${(err as Error).message}`);
    }
    // Our copy of the ready write end must go, or EOF on the ready pipe could never arrive.
    closeFdQuietly(readyW);
    if (child.pid === undefined) {
      // exec failed (ENOENT, EACCES): Node reports it on the next tick; do not take EOF for "ready".
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      closeFdQuietly(readyR);
      throw new Error(`failed to start logging binary ${o.binary}: ${err.message}`);
    }
    const logger = new BinaryLogger(child, o.log);
    try {
      await waitReady(readyR, child, o.binary, o.signal);
    } catch (err) {
      await logger.stop(0);
      throw err;
    }
    return logger;
  }

  /** SIGTERM, wait up to timeoutMs for the exit, then SIGKILL (Go: 12 s). */
  async stop(timeoutMs = LOGGER_TERM_TIMEOUT_MS): Promise<void> {
    if (this.hasExited || this.child.pid === undefined) return;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut && !this.hasExited) {
      if (timeoutMs > 0)
        this.log?.('warn', 'logging binary did not exit after SIGTERM, killing it', { pid: this.child.pid });
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

function waitReady(readyFd: number, child: ChildProcess, binary: string, signal?: AbortSignal): Promise<void> {
  const ready = socketOnFd(readyFd, 'read');
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      child.off('error', onSpawnError);
      signal?.removeEventListener('abort', onAbort);
      void destroyAndWait(ready).then(() => (err ? reject(err) : resolve()));
    };
    const onSpawnError = (err: Error): void =>
      settle(new Error(`failed to start logging binary ${binary}: ${err.message}`));
    const onAbort = (): void => settle(new Error(`waiting for logging binary ${binary} to be ready: aborted`));
    child.once('error', onSpawnError);
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted) onAbort();
    // One byte or EOF both mean ready (a logger may just close fd 5).
    ready.once('data', () => settle());
    ready.once('end', () => settle());
    ready.once('error', (err) => settle(new Error(`failed to read from logging binary: ${err.message}`)));
  });
}
