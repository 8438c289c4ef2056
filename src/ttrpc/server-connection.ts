// One accepted connection: demultiplexes frames into calls, runs handlers concurrently, writes replies
// in completion order. Enforces the ttrpc 1.2 stream-id rules and the size limit per stream.
import type { Socket } from 'node:net';
import { Channel, encodeFrame, Flags, FrameHeader, MessageType } from './channel';
import { decodeRequest, encodeResponse, Request } from './codec';
import type { Closable, ServerLimits } from './limits';
import { MessageQueue } from './message-queue';
import { metadataFromPairs } from './metadata';
import type { CallContext, MethodEntry, ServiceRegistry } from './services';
import { Code, oversizeMessage, toStatus, TtrpcError } from './status';
import { type CancelTimeout, lazyTimeout } from '../sys/lazy-timeout';

export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: object) => void;

/** Go's server buffers 64 messages per client-streaming stream. */
const STREAM_RECV_BUFFER = 64;
// setTimeout cannot take more than 2^31-1 ms; longer deadlines simply never fire.
const MAX_TIMER_MS = 0x7fffffff;

/**
 * A call's cancellation, its AbortController made only when the handler looks at ctx.signal (State,
 * CloseIO and the like never do: an AbortController and its signal cost a few microseconds per
 * call). Aborting before then keeps the reason; the signal made later is aborted with it.
 */
class CallAbort {
  private controller: AbortController | undefined;
  private why: unknown;
  private done = false;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.done) this.controller.abort(this.why);
    }
    return this.controller.signal;
  }

  /** The reason it was aborted with (undefined while not aborted). */
  get reason(): unknown {
    return this.done ? this.why : undefined;
  }

  abort(reason: unknown): void {
    if (this.done) return;
    this.done = true;
    this.why = reason;
    this.controller?.abort(reason);
  }
}

interface ActiveStream {
  id: number;
  abort: CallAbort;
  /** Calls off its deadline (lazyTimeout). */
  cancelTimer?: CancelTimeout;
  inbound?: MessageQueue<Buffer>;
  done: boolean;
  service: string;
  method: string;
  /** The request frame, kept for calls a new process may run again after an upgrade (Wait). */
  replay?: Buffer;
}

/** One call in flight, as the upgrade quiesce sees it. */
export interface InFlightCall {
  streamId: number;
  service: string;
  method: string;
  replayable: boolean;
}

/** What a connection hands to the next process of an in-place upgrade (see Channel.detach). */
export interface ConnectionHandover {
  fd: number;
  lastRequestId: number;
  /** Requests to run again (replayable calls still in flight), then the bytes read but not handled. */
  input: Buffer;
}

export interface ServerConnectionOptions {
  registry: ServiceRegistry;
  maxMessageSize: number;
  log: LogFn;
  /** The server's shared accounting of partial frames, unread replies and pending calls. */
  limits: ServerLimits<ServerConnection>;
  /** Called once after the connection is fully closed. */
  onClosed: (conn: ServerConnection) => void;
  /** Calls that an upgraded process may run again from their request (idempotent waits). */
  replayable?: (service: string, method: string) => boolean;
  /** Adopted from the previous process of an upgrade. */
  adopted?: { lastRequestId: number; input: Buffer };
}

export class ServerConnection implements Closable {
  private readonly channel: Channel;
  private readonly streams = new Map<number, ActiveStream>();
  private lastRequestId = 0;
  private draining = false;
  /** Not read while the peer leaves our replies unread (see checkUnsent). */
  private readPaused = false;

  constructor(
    socket: Socket,
    private readonly opts: ServerConnectionOptions
  ) {
    this.channel = new Channel(socket, this, opts.maxMessageSize, opts.limits.limits.maxFramesPerTurn);
    if (opts.adopted) {
      this.lastRequestId = opts.adopted.lastRequestId;
      // Now, before the socket is read: the replayed requests carry lower stream ids than anything
      // the peer sends next. Their handlers run from microtasks, after the restore finished.
      this.channel.inject(opts.adopted.input);
    }
  }

  // ---- upgrade hand-over ----

  /** Stops reading requests (at a frame boundary: partial frames stay buffered); replies still go out. */
  hold(): void {
    this.channel.hold();
  }

  release(): void {
    this.channel.release();
  }

  inFlight(): InFlightCall[] {
    return [...this.streams.values()].map((s) => ({
      streamId: s.id,
      service: s.service,
      method: s.method,
      replayable: !!s.replay,
    }));
  }

  /** Reply bytes the kernel has not taken yet. */
  get unsentBytes(): number {
    return this.channel.unsentBytes;
  }

  /**
   * Detaches the connection for the next process. Replayable calls in flight are sent to it again
   * as requests; `skip` are calls the caller answers itself (the Upgrade call). Must be called with
   * no other call in flight and every reply flushed.
   */
  handover(skip: ReadonlySet<number>): ConnectionHandover {
    const replays = [...this.streams.values()].filter((s) => s.replay && !skip.has(s.id)).sort((a, b) => a.id - b.id);
    const rest = [...this.streams.values()].filter((s) => !s.replay && !skip.has(s.id));
    if (rest.length) throw new Error(`calls still in flight: ${rest.map((s) => s.method).join(', ')}`);
    const { fd, pending } = this.channel.detach();
    for (const s of this.streams.values()) {
      s.cancelTimer?.();
      s.done = true;
    }
    this.streams.clear();
    const lastRequestId = replays.length ? replays[0].id - 1 : this.lastRequestId;
    return { fd, lastRequestId, input: Buffer.concat([...replays.map((s) => s.replay!), pending]) };
  }

  /** The new process answers a call the previous one took (the Upgrade call itself). */
  respond(streamId: number, code: Code, message: string, payload?: Uint8Array): void {
    this.writeResponse(streamId, code, message, payload);
  }

  get activeCalls(): number {
    return this.streams.size;
  }

  /** Graceful: refuse new calls, close once in-flight calls have answered. */
  drain(): void {
    this.draining = true;
    if (this.streams.size === 0) this.endGracefully();
  }

  /** Hard close: cancels every in-flight handler; their replies are dropped. */
  destroy(): void {
    this.channel.close();
  }

  /** The server's limits chose this connection as the one holding too much. */
  closeForLimit(what: string): void {
    if (this.channel.closed) return;
    this.opts.log('warn', 'ttrpc: closing connection: resource limit', {
      reason: what,
      pendingCalls: this.streams.size,
    });
    this.channel.close();
  }

  // ---- FrameSink / ChannelEvents ----

  frame(h: FrameHeader, data: Buffer): void {
    // The rest of a chunk read before the connection was closed (e.g. for a limit) is not served.
    if (this.channel.closed) return;
    try {
      this.dispatch(h, data);
    } catch (err) {
      // A bug in dispatch must cost at most this frame, never the process.
      this.opts.log('error', 'ttrpc: failed handling frame', { streamId: h.streamId, type: h.type, err: String(err) });
    }
  }

  oversize(h: FrameHeader): void {
    this.opts.log('warn', 'ttrpc: discarded oversized frame', { streamId: h.streamId, length: h.length });
    this.sendStatus(h.streamId, Code.RESOURCE_EXHAUSTED, oversizeMessage(h.length, this.opts.maxMessageSize));
  }

  buffered(bytes: number): void {
    this.opts.limits.setPartial(this, bytes);
  }

  closed(err: Error | null, midFrame: boolean): void {
    if (
      err &&
      (err as NodeJS.ErrnoException).code !== 'ECONNRESET' &&
      (err as NodeJS.ErrnoException).code !== 'EPIPE'
    ) {
      this.opts.log('warn', 'ttrpc: connection error', { err: err.message });
    } else if (midFrame) {
      this.opts.log('debug', 'ttrpc: peer went away mid-frame');
    }
    const reason = new TtrpcError(Code.CANCELLED, 'ttrpc: connection closed');
    for (const s of this.streams.values()) this.finish(s, reason);
    this.opts.limits.forget(this);
    this.opts.onClosed(this);
  }

  // ---- request handling ----

  private dispatch(h: FrameHeader, data: Buffer): void {
    if (h.streamId % 2 !== 1) {
      this.sendStatus(h.streamId, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (h.type === MessageType.REQUEST) this.onRequest(h, data);
    else if (h.type === MessageType.DATA) this.onData(h, data);
    else this.opts.log('debug', 'ttrpc: ignoring frame of unknown type', { type: h.type, streamId: h.streamId });
  }

  private onRequest(h: FrameHeader, data: Buffer): void {
    const id = h.streamId;
    if (id <= this.lastRequestId) {
      this.sendStatus(id, Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment');
      return;
    }
    this.lastRequestId = id;
    let req: Request;
    try {
      req = decodeRequest(data);
    } catch (err) {
      this.sendStatus(id, Code.INVALID_ARGUMENT, `unmarshal request error: ${(err as Error).message}`);
      return;
    }
    let entry: MethodEntry;
    try {
      entry = this.opts.registry.resolve(req.service, req.method);
    } catch (err) {
      const st = toStatus(err);
      this.sendStatus(id, st.code, st.message);
      return;
    }
    if (this.draining) {
      this.sendStatus(id, Code.UNAVAILABLE, 'ttrpc: server closed');
      return;
    }
    const refused = this.opts.limits.refuseCall(this);
    if (refused) {
      this.sendStatus(id, Code.RESOURCE_EXHAUSTED, refused);
      return;
    }
    const replay = this.opts.replayable?.(req.service, req.method) ? encodeFrame(id, h.type, h.flags, data) : undefined;
    this.startCall(id, h.flags, req, entry, replay);
  }

  private startCall(id: number, flags: number, req: Request, entry: MethodEntry, replay?: Buffer): void {
    const stream: ActiveStream = {
      id,
      abort: new CallAbort(),
      done: false,
      service: req.service,
      method: req.method,
      replay,
    };
    const abort = stream.abort;
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      metadata: metadataFromPairs(req.metadata),
      get signal() {
        return abort.signal;
      },
    };
    if (req.timeoutNano !== 0) {
      const ms = req.timeoutNano / 1e6;
      ctx.deadline = Date.now() + ms;
      const expire = () => stream.abort.abort(new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded'));
      if (ms <= 0) expire();
      else if (ms <= MAX_TIMER_MS) {
        // Armed only for a call still running after this turn of the event loop: most are answered
        // within it (State, Stats). containerd gives every Stats 2 s, and a timer cleared before it
        // was due woke the shim 2 s after each of a kubelet's Stats (~0.5 ms of CPU; lazy-timeout.ts).
        stream.cancelTimer = lazyTimeout(expire, ms, 1);
      }
    }
    this.streams.set(id, stream);
    this.opts.limits.setCalls(this, this.streams.size);

    const send = (msg: Uint8Array) => this.sendData(stream, msg);
    let run: () => Promise<Uint8Array | void>;
    switch (entry.kind) {
      case 'unary':
        run = async () => entry.handler(req.payload, ctx);
        break;
      case 'server-stream':
        run = () => entry.handler(req.payload, ctx, send);
        break;
      case 'client-stream':
      case 'bidi-stream': {
        const inbound = new MessageQueue<Buffer>();
        stream.inbound = inbound;
        // Like Go: a non-empty request payload is the first client message (ttrpc issue #126).
        if (req.payload.length > 0) inbound.push(req.payload);
        if ((flags & Flags.REMOTE_OPEN) === 0) inbound.end();
        run =
          entry.kind === 'client-stream' ? () => entry.handler(inbound, ctx) : () => entry.handler(inbound, ctx, send);
        break;
      }
    }
    const streamsReplies = entry.kind === 'server-stream' || entry.kind === 'bidi-stream';
    Promise.resolve()
      .then(run)
      .then(
        (reply) => {
          if (stream.done) return;
          if (streamsReplies) this.closeStream(stream);
          else this.replyOk(stream, reply);
        },
        (err) => {
          if (stream.done) return;
          const st = toStatus(err);
          this.reply(stream, st.code, st.message);
        }
      )
      .catch((err) => this.opts.log('error', 'ttrpc: failed to reply', { streamId: id, err: String(err) }));
  }

  private onData(h: FrameHeader, data: Buffer): void {
    const stream = this.streams.get(h.streamId);
    if (!stream) {
      this.sendStatus(h.streamId, Code.INVALID_ARGUMENT, 'StreamID is no longer active');
      return;
    }
    const inbound = stream.inbound;
    const closing = (h.flags & Flags.REMOTE_CLOSED) !== 0;
    if ((h.flags & Flags.NO_DATA) === 0) {
      if (!inbound || inbound.isEnded) {
        this.failStream(stream, 'data handling error: ttrpc: stream is closed');
        return;
      }
      if (inbound.length >= STREAM_RECV_BUFFER) {
        this.failStream(stream, 'data handling error: ttrpc: stream buffer full');
        return;
      }
      inbound.push(data);
    }
    if (closing) {
      inbound?.end();
      if (data.length > 0) this.failStream(stream, 'data close message cannot include data');
    }
  }

  // ---- replies ----

  private async sendData(stream: ActiveStream, msg: Uint8Array): Promise<void> {
    if (stream.done || this.channel.closed)
      throw stream.abort.reason ?? new TtrpcError(Code.CANCELLED, 'ttrpc: stream closed');
    if (!(msg instanceof Uint8Array)) throw new TtrpcError(Code.INTERNAL, 'ttrpc: stream message must be bytes');
    if (msg.length > this.opts.maxMessageSize) {
      throw new TtrpcError(Code.RESOURCE_EXHAUSTED, oversizeMessage(msg.length, this.opts.maxMessageSize));
    }
    const ok = this.channel.send(stream.id, MessageType.DATA, 0, msg);
    this.checkUnsent();
    if (!ok) await this.channel.drained();
  }

  private closeStream(stream: ActiveStream): void {
    this.finish(stream);
    this.channel.send(stream.id, MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, Buffer.alloc(0));
    this.checkUnsent();
    this.afterFinish();
  }

  private replyOk(stream: ActiveStream, reply: unknown): void {
    if (reply === undefined || reply === null) {
      this.reply(stream, Code.INTERNAL, 'ttrpc: marshal called with nil');
    } else if (!(reply instanceof Uint8Array)) {
      this.reply(stream, Code.INTERNAL, 'ttrpc: error unsupported response type');
    } else {
      this.finish(stream);
      this.writeResponse(stream.id, Code.OK, '', reply);
      this.afterFinish();
    }
  }

  private reply(stream: ActiveStream, code: Code, message: string): void {
    this.finish(stream);
    this.writeResponse(stream.id, code, message);
    this.afterFinish();
  }

  /** The client broke the stream protocol: stop the handler and answer INVALID_ARGUMENT. */
  private failStream(stream: ActiveStream, message: string): void {
    this.finish(stream, new TtrpcError(Code.CANCELLED, message));
    this.writeResponse(stream.id, Code.INVALID_ARGUMENT, message);
    this.afterFinish();
  }

  /** A status on a stream that never became a call (bad id, unknown method, oversize...). */
  private sendStatus(id: number, code: Code, message: string): void {
    this.writeResponse(id, code, message);
  }

  private writeResponse(id: number, code: Code, message: string, payload?: Uint8Array): void {
    if (this.channel.closed) return;
    let body = encodeResponse({ status: { code, message }, payload });
    if (body.length > this.opts.maxMessageSize) {
      // Never emit a frame the peer must reject, and never drop the connection for it (Go 1.2 would).
      this.opts.log('error', 'ttrpc: response too large, answering with an error instead', {
        streamId: id,
        length: body.length,
      });
      body = encodeResponse({
        status: { code: Code.RESOURCE_EXHAUSTED, message: oversizeMessage(body.length, this.opts.maxMessageSize) },
      });
    }
    this.channel.send(id, MessageType.RESPONSE, 0, body);
    this.checkUnsent();
  }

  /**
   * Backpressure: a peer that does not read its replies is not read either, until it catches up, so
   * it cannot make us queue replies (and start calls) without bound. Only connections over the
   * threshold count towards the server's total of unsent bytes.
   */
  private checkUnsent(): void {
    const unsent = this.channel.unsentBytes;
    if (unsent <= this.opts.limits.limits.maxUnsentBytesPerConnection) return;
    this.opts.limits.setUnsent(this, unsent);
    if (this.readPaused || this.channel.closed) return;
    this.readPaused = true;
    this.channel.pauseReading();
    this.opts.log('debug', 'ttrpc: peer is not reading its replies, pausing reads', { unsent });
    void this.channel.drained().then(() => {
      this.readPaused = false;
      this.opts.limits.setUnsent(this, 0);
      this.channel.resumeReading();
    });
  }

  private finish(stream: ActiveStream, reason?: TtrpcError): void {
    if (stream.done) return;
    stream.done = true;
    stream.cancelTimer?.();
    this.streams.delete(stream.id);
    this.opts.limits.setCalls(this, this.streams.size);
    stream.inbound?.end(reason);
    if (reason) stream.abort.abort(reason);
  }

  private afterFinish(): void {
    if (this.draining && this.streams.size === 0) this.endGracefully();
  }

  private endGracefully(): void {
    if (this.channel.closed) return;
    // end() flushes queued replies before the FIN; 'close' then tears the channel down.
    this.channel.socket.end();
  }
}
