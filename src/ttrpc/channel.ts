// Framing only: 10-byte header (length u32 BE, stream id u32 BE, type u8, flags u8) + data.
// Knows nothing of protobuf or calls; the server and client build on it.
import type { Socket } from 'node:net';
import { FrameBatcher } from './frame-batcher';
import type { FrameHeader, FrameSink } from './frame';

export type { FrameHeader, FrameSink } from './frame';

export const HEADER_LENGTH = 10;
/** 4 MiB, the limit of containerd/ttrpc (header not counted). */
export const MAX_MESSAGE_SIZE = 4 << 20;

export enum MessageType {
  REQUEST = 0x01,
  RESPONSE = 0x02,
  DATA = 0x03,
}

/** Flag bits; their meaning depends on the frame type (containerd/ttrpc's PROTOCOL.md). */
export const Flags = {
  REMOTE_CLOSED: 0x01,
  REMOTE_OPEN: 0x02,
  NO_DATA: 0x04,
} as const;

export function encodeHeader(h: FrameHeader): Buffer {
  const b = Buffer.allocUnsafe(HEADER_LENGTH);
  b.writeUInt32BE(h.length >>> 0, 0);
  b.writeUInt32BE(h.streamId >>> 0, 4);
  b[8] = h.type & 0xff;
  b[9] = h.flags & 0xff;
  return b;
}

export function decodeHeader(b: Buffer): FrameHeader {
  return { length: b.readUInt32BE(0), streamId: b.readUInt32BE(4), type: b[8], flags: b[9] };
}

/** One complete frame as a single buffer (header + data). */
export function encodeFrame(streamId: number, type: number, flags: number, data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  b.writeUInt32BE(data.length, 0);
  b.writeUInt32BE(streamId >>> 0, 4);
  b[8] = type & 0xff;
  b[9] = flags & 0xff;
  b.set(data, HEADER_LENGTH);
  return b;
}

/**
 * Incremental frame parser: feed it whatever chunks the socket delivers. Oversized frames are skipped
 * without buffering their data, then reported, so one bad frame costs neither memory nor the connection.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private discardRemaining = 0;
  private discarding: FrameHeader | null = null;

  constructor(
    private readonly sink: FrameSink,
    private readonly maxMessageSize = MAX_MESSAGE_SIZE
  ) {}

  /** Bytes held of a frame not yet complete (a frame being discarded holds none). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Takes the bytes of the incomplete frame held (upgrade hand-over). Throws while an oversized
   * frame is being skipped: its rest cannot be described by bytes alone.
   */
  takeBuffered(): Buffer {
    if (this.discarding) throw new Error('a connection is in the middle of an oversized frame');
    const out = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return out;
  }

  /** True when the stream stopped inside a frame (bytes of an incomplete frame are pending). */
  get midFrame(): boolean {
    return this.buffered > 0 || this.discarding !== null;
  }

  push(chunk: Buffer): void {
    if (this.discarding) {
      const n = Math.min(this.discardRemaining, chunk.length);
      this.discardRemaining -= n;
      chunk = chunk.subarray(n);
      if (this.discardRemaining > 0) return;
      const h = this.discarding;
      this.discarding = null;
      this.sink.oversize(h);
    }
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    this.drain();
  }

  private drain(): void {
    while (this.buffered >= HEADER_LENGTH && !this.discarding) {
      const header = decodeHeader(this.peek(HEADER_LENGTH));
      if (header.length > this.maxMessageSize) {
        this.take(HEADER_LENGTH);
        const now = Math.min(header.length, this.buffered);
        this.take(now);
        if (now < header.length) {
          this.discardRemaining = header.length - now;
          this.discarding = header;
          return;
        }
        this.sink.oversize(header);
        continue;
      }
      if (this.buffered < HEADER_LENGTH + header.length) return;
      this.take(HEADER_LENGTH);
      this.sink.frame(header, this.take(header.length));
    }
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.chunks, this.buffered).subarray(0, n);
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const want = n - off;
      if (c.length <= want) {
        c.copy(out, off);
        off += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, off, 0, want);
        this.chunks[0] = c.subarray(want);
        off += want;
      }
    }
    return out;
  }
}

export interface ChannelEvents extends FrameSink {
  /** The connection ended (EOF, reset, EPIPE, local close). Called exactly once. */
  closed(err: Error | null, midFrame: boolean): void;
  /** Bytes of an incomplete frame now held, reported after each chunk read when it changed. */
  buffered?(bytes: number): void;
}

// Below this size header and data are copied into one buffer; above it they are written as two chunks
// of one corked write, so large payloads are not copied. Writes are queued synchronously, so frames
// never interleave either way.
const COPY_THRESHOLD = 64 * 1024;

/** A framed, full-duplex connection over a stream socket. */
export class Channel {
  private readonly decoder: FrameDecoder;
  private readonly batcher: FrameBatcher;
  private isClosed = false;
  private reportedBuffered = 0;
  /** Reading stops for either reason and resumes when neither holds. */
  private pausedByOwner = false;
  private pausedForBacklog = false;
  /** The peer's EOF came while frames it sent were still waiting for their turn. */
  private endAfterBacklog = false;
  /** Upgrade quiesce: not read, no frame handed on (hold/release/detach). */
  private held = false;

  /**
   * @param framesPerTurn frames handed to `events` per event-loop turn; the server bounds it so that
   *   one connection's pipelined flood does not delay the others (Infinity: a whole read at once)
   */
  constructor(
    readonly socket: Socket,
    private readonly events: ChannelEvents,
    maxMessageSize = MAX_MESSAGE_SIZE,
    framesPerTurn = Infinity
  ) {
    this.batcher = new FrameBatcher(events, framesPerTurn, (backlog) => this.onBacklog(backlog));
    this.decoder = new FrameDecoder(this.batcher, maxMessageSize);
    socket.on('data', (chunk: Buffer) => {
      if (this.isClosed) return;
      this.decoder.push(chunk);
      const held = this.decoder.bufferedBytes;
      if (held !== this.reportedBuffered && !this.isClosed) {
        this.reportedBuffered = held;
        this.events.buffered?.(held);
      }
      this.batcher.flush();
    });
    socket.on('error', (err) => this.finish(err));
    // We decide what an EOF does (below), not Node: its default would end our side at once and
    // fail the replies of frames still waiting for their turn.
    socket.allowHalfOpen = true;
    socket.on('end', () => {
      // Serve what the peer sent before its EOF, as when every frame was handled on its read.
      if (this.batcher.backlog > 0) this.endAfterBacklog = true;
      else this.finish(null);
    });
    socket.on('close', () => this.finish(null));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Queue one frame. Returns false when the socket buffer is full (wait for `drained()`), and also when
   * the channel is closed (the frame is dropped).
   */
  send(streamId: number, type: number, flags: number, data: Uint8Array): boolean {
    if (this.isClosed || this.socket.destroyed) return false;
    if (data.length <= COPY_THRESHOLD) return this.socket.write(encodeFrame(streamId, type, flags, data));
    this.socket.cork();
    this.socket.write(encodeHeader({ length: data.length, streamId, type, flags }));
    const ok = this.socket.write(data);
    this.socket.uncork();
    return ok;
  }

  /** Bytes queued for the peer that the kernel has not taken yet (the peer is not reading). */
  get unsentBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * Upgrade quiesce: stop reading at once (not even into Node's read buffer) and hand no frame on,
   * until release(). Replies can still be sent.
   */
  hold(): void {
    if (this.isClosed) return;
    this.held = true;
    this.batcher.hold(true);
    this.updateReading();
    stopReadingNow(this.socket);
  }

  release(): void {
    if (this.isClosed || !this.held) return;
    this.held = false;
    this.batcher.hold(false);
    this.updateReading();
  }

  /**
   * Upgrade hand-over, after hold(): every byte the peer sent that was read but not handled, in the
   * order it came (frames decoded but not handed on, an incomplete frame, Node's read buffer), and
   * the socket's fd. The channel is dead afterwards; the socket and its fd stay open for the next
   * process, which feeds `pending` to its own decoder first.
   */
  detach(): { fd: number; pending: Buffer } {
    const parts: Buffer[] = [];
    for (const p of this.batcher.takeBacklog()) {
      if (p.data === null)
        this.events.oversize(p.header); // answered now: nothing of it is left to read
      else parts.push(encodeFrame(p.header.streamId, p.header.type, p.header.flags, p.data));
    }
    parts.push(this.decoder.takeBuffered());
    this.socket.removeAllListeners('data');
    // Paused: read() returns what Node buffered without emitting it anywhere now.
    for (let chunk = this.socket.read(); chunk; chunk = this.socket.read()) parts.push(chunk as Buffer);
    stopReadingNow(this.socket); // read() may have restarted libuv's reading
    this.isClosed = true;
    this.batcher.stop();
    this.socket.removeAllListeners('end');
    this.socket.removeAllListeners('close');
    const fd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    return { fd, pending: Buffer.concat(parts) };
  }

  /** Bytes the previous process read from this connection and did not handle: handled first. */
  inject(bytes: Buffer): void {
    if (this.isClosed || bytes.length === 0) return;
    this.decoder.push(bytes);
    this.batcher.flush();
  }

  /** Stop reading from the peer (backpressure); frames already read are still delivered. */
  pauseReading(): void {
    this.pausedByOwner = true;
    this.updateReading();
  }

  resumeReading(): void {
    this.pausedByOwner = false;
    this.updateReading();
  }

  private onBacklog(backlog: boolean): void {
    this.pausedForBacklog = backlog;
    this.updateReading();
    // A turn later, so the replies of the last batch (written from microtasks) go out first.
    if (!backlog && this.endAfterBacklog) setImmediate(() => this.finish(null));
  }

  private updateReading(): void {
    if (this.isClosed) return;
    if (this.pausedByOwner || this.pausedForBacklog || this.held) this.socket.pause();
    else this.socket.resume();
  }

  /** Resolves when the socket can take more data, or the channel closed. */
  drained(): Promise<void> {
    if (this.isClosed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  close(): void {
    this.finish(null);
  }

  private finish(err: Error | null): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.batcher.stop();
    this.socket.destroy();
    this.events.closed(err, this.decoder.midFrame);
  }
}

/** net.Socket.pause() lets libuv read on until Node's buffer is full: stop the handle itself. */
function stopReadingNow(socket: Socket): void {
  const h = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } })._handle;
  if (h?.readStop && h.reading) {
    h.reading = false;
    h.readStop();
  }
}
