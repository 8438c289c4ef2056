// Event-driven reads of a non-blocking eventfd, without parking a libuv thread-pool thread on it.
//
// Node has no public API for "watch this arbitrary fd": `new net.Socket({ fd })` rejects eventfds
// (libuv guesses their type as UNKNOWN). libuv's pipe handle, however, accepts any pollable fd, so
// we open one on the eventfd (checked on Node 20) and read it as a stream: each read() returns the
// 8-byte counter and resets it. If that internal binding is unavailable we fall back to a cheap
// non-blocking read on a timer (fs.readSync on an EFD_NONBLOCK fd returns EAGAIN immediately).
import { readSync } from 'node:fs';
import { Socket } from 'node:net';
import { close as closeFd } from '../../sys/libc';

export type EventfdMode = 'stream' | 'poll';

const POLL_INTERVAL_MS = 250;

interface PipeHandle {
  open(fd: number): number;
  readStop(): number;
}
type PipeCtor = new (type: number) => PipeHandle;

function pipeBinding(): { Pipe: PipeCtor; socketType: number } | null {
  try {
    // process.binding is deprecated in documentation only (DEP0111); it prints nothing.
    const b = (
      process as unknown as { binding(name: string): { Pipe?: PipeCtor; constants?: { SOCKET?: number } } }
    ).binding('pipe_wrap');
    if (typeof b.Pipe !== 'function' || typeof b.constants?.SOCKET !== 'number') return null;
    return { Pipe: b.Pipe, socketType: b.constants.SOCKET };
  } catch {
    return null; // a Node without this internal binding: the caller reads the eventfd another way
  }
}

export class EventfdReader {
  readonly mode: EventfdMode;
  private socket?: Socket;
  private handle?: PipeHandle;
  private timer?: NodeJS.Timeout;
  private closed = false;

  /**
   * Takes ownership of `fd` (must be EFD_NONBLOCK): close() closes it. `onSignal` gets the counter
   * value of each read (>= 1).
   */
  constructor(
    private readonly fd: number,
    private readonly onSignal: (count: bigint) => void,
    force?: EventfdMode
  ) {
    const binding = force === 'poll' ? null : pipeBinding();
    if (binding) {
      const handle = new binding.Pipe(binding.socketType);
      const rc = handle.open(fd);
      if (rc === 0) {
        this.mode = 'stream';
        this.handle = handle;
        this.socket = new Socket({ handle, readable: true, writable: false } as unknown as ConstructorParameters<
          typeof Socket
        >[0]);
        this.socket.on('data', (chunk: Buffer) => this.deliver(chunk));
        this.socket.on('error', () => this.close());
        this.socket.unref();
        return;
      }
    }
    this.mode = 'poll';
    this.timer = setInterval(() => this.poll(), POLL_INTERVAL_MS);
    this.timer.unref();
  }

  private deliver(chunk: Buffer): void {
    // libuv may hand over several 8-byte counters in one chunk.
    for (let off = 0; off + 8 <= chunk.length && !this.closed; off += 8) {
      const count = chunk.readBigUInt64LE(off);
      if (count > 0n) this.onSignal(count);
    }
  }

  private poll(): void {
    this.drain();
  }

  /**
   * Reads a pending counter now instead of waiting for the event loop to get to it (used before
   * publishing a container's exit, so an OOM that preceded it is reported first).
   */
  drain(): void {
    if (this.closed) return;
    const buf = Buffer.alloc(8);
    try {
      if (readSync(this.fd, buf, 0, 8, null) === 8) this.deliver(buf);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') this.close();
    }
  }

  /**
   * Stops reading and gives the fd up without closing it (an in-place upgrade hands it to the next
   * program, which reads the counter the kernel kept adding to meanwhile). A pending counter is
   * delivered first.
   */
  detach(): number {
    this.drain();
    this.closed = true;
    // libuv must not read (and so reset) the counter any more: that read would be lost.
    if (this.handle) this.handle.readStop();
    else clearInterval(this.timer);
    return this.fd;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.socket) {
      this.socket.destroy(); // closes the fd with the handle
    } else {
      clearInterval(this.timer);
      try {
        closeFd(this.fd);
      } catch {
        // already gone
      }
    }
  }
}
