// Copies one container stream to its destination without loss and without letting a broken
// destination hurt the container or the shim.
import type { Readable, Writable } from 'node:stream';
import type { IoLog } from './types';

export interface PumpOptions {
  /** Stream name for logs, e.g. "stdout". */
  name: string;
  log?: IoLog;
  /** End the destination when the source ends (false for a file shared by stdout and stderr). */
  endDestination?: boolean;
  /** Source errors with these codes mean end-of-data (EIO on a pty master once the slave is gone). */
  endOnErrorCodes?: string[];
  /**
   * Called once the source reported its end; returns data still pending in the kernel (null = none
   * left). For a pty master: libuv reports end-of-stream on POLLHUP after a short read, but a
   * master read returns at most ~4 KiB, so output written just before the exit may still be there.
   */
  readRemaining?: () => Buffer | null;
  /** Filled with this pump's hand-over controls (in-place upgrade). */
  control?: Partial<PumpControl>;
}

/**
 * An in-place upgrade stops a pump between two chunks: pause() stops reading the source at once,
 * flushed() says when the destination took everything, detach() leaves both streams open (their
 * fds go to the next process) and returns bytes read but never written.
 */
export interface PumpControl {
  pause(): void;
  resume(): void;
  flushed(): boolean;
  /** The source ended (nothing to hand over). */
  finished(): boolean;
  /** Destination failed earlier: the next process drops what it reads too. */
  dropping(): boolean;
  detach(): Buffer;
}

/** Upper bound for readRemaining() calls, in case a writer keeps the source busy. */
const MAX_REMAINING_READS = 4096;

export interface PumpResult {
  bytesRead: number;
  bytesDropped: number;
}

/**
 * Pumps src into dst with back-pressure: a slow reader slows the container, as with the Go shim.
 * If dst fails (reader gone for good, disk full...), logs once and keeps draining src into the void,
 * so the container never blocks on a dead stream and nothing throws. Resolves when src reached its
 * end and dst flushed what it accepted.
 */
export function pump(src: Readable, dst: Writable, opts: PumpOptions): Promise<PumpResult> {
  const endDestination = opts.endDestination ?? true;
  const result: PumpResult = { bytesRead: 0, bytesDropped: 0 };
  let dropping = false;
  let waitingForDrain = false;
  let held = false;
  let detached = false;

  return new Promise((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished || detached) return;
      finished = true;
      dst.off('drain', onDrain);
      for (let i = 0; opts.readRemaining && i < MAX_REMAINING_READS; i++) {
        const chunk = opts.readRemaining();
        if (!chunk) break;
        result.bytesRead += chunk.length;
        if (dropping) result.bytesDropped += chunk.length;
        else dst.write(chunk); // bounded by the kernel's buffer; back-pressure no longer matters
      }
      if (dropping || !endDestination) return resolve(result);
      // Resolve once everything accepted by dst reached the kernel.
      dst.end(() => resolve(result));
      dst.once('error', () => resolve(result));
    };

    const startDropping = (err: Error): void => {
      if (dropping) return;
      dropping = true;
      const code = (err as NodeJS.ErrnoException).code;
      opts.log?.('warn', `${opts.name}: destination failed, dropping further output`, { error: err.message, code });
      if (waitingForDrain) {
        waitingForDrain = false;
        if (!held) src.resume();
      }
      dst.destroy();
      if (src.readableEnded || src.destroyed) finish();
    };

    function onDrain(): void {
      if (!waitingForDrain) return;
      waitingForDrain = false;
      if (!held) src.resume();
    }

    dst.on('error', startDropping);
    dst.on('drain', onDrain);

    if (opts.control) {
      const c = opts.control;
      c.pause = () => {
        held = true;
        src.pause();
        stopReadingNow(src);
      };
      c.resume = () => {
        held = false;
        if (!waitingForDrain && !finished) src.resume();
      };
      c.flushed = () => dropping || dst.writableLength === 0;
      c.finished = () => finished;
      c.dropping = () => dropping;
      c.detach = () => {
        detached = true;
        src.removeListener('data', onData);
        src.removeListener('end', finish);
        src.removeListener('close', finish);
        dst.removeListener('drain', onDrain);
        const parts: Buffer[] = [];
        for (let chunk = src.read(); chunk; chunk = src.read()) parts.push(chunk as Buffer);
        stopReadingNow(src);
        return Buffer.concat(parts);
      };
    }

    function onData(chunk: Buffer): void {
      result.bytesRead += chunk.length;
      if (dropping) {
        result.bytesDropped += chunk.length;
        return;
      }
      if (!dst.write(chunk)) {
        waitingForDrain = true;
        src.pause();
      }
    }
    src.on('data', onData);
    src.on('end', finish);
    src.on('error', (err: NodeJS.ErrnoException) => {
      if (!opts.endOnErrorCodes?.includes(err.code ?? '')) {
        opts.log?.('warn', `${opts.name}: read failed, treating as end of stream`, {
          error: err.message,
          code: err.code,
        });
      }
      finish();
    });
    src.on('close', finish);
  });
}

/** pause() alone lets libuv read on into Node's buffer: stop the handle itself. */
function stopReadingNow(stream: Readable): void {
  const h = (stream as unknown as { _handle?: { reading?: boolean; readStop?: () => number } })._handle;
  if (h?.readStop && h.reading) {
    h.reading = false;
    h.readStop();
  }
}
