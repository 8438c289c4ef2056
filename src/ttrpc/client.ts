// ttrpc client: many concurrent calls on one connection, odd increasing stream ids, local deadlines.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { Channel, FrameHeader, MAX_MESSAGE_SIZE, MessageType, Flags } from './channel';
import { ClientStream, StreamTransport } from './client-stream';
import { decodeResponse, encodeRequest, Response } from './codec';
import { Metadata, metadataToPairs } from './metadata';
import type { LogFn } from './server-connection';
import { closedError, Code, oversizeMessage, TtrpcError } from './status';

export interface ClientOptions {
  maxMessageSize?: number;
  log?: LogFn;
}

export interface CallOptions {
  /** Local deadline; also sent to the server as timeout_nano. */
  timeoutMs?: number;
  metadata?: Metadata;
  /** Aborting fails the call locally with CANCELLED (ttrpc has no cancel message). */
  signal?: AbortSignal;
}

export interface ClientStreamCall {
  send(msg: Uint8Array): Promise<void>;
  /** Half-close and wait for the server's single reply. */
  closeAndRecv(): Promise<Buffer>;
}

export interface BidiStreamCall extends AsyncIterable<Buffer> {
  send(msg: Uint8Array): Promise<void>;
  closeSend(): Promise<void>;
}

type Pending =
  | { kind: 'unary'; resolve: (b: Buffer) => void; reject: (e: unknown) => void; cleanup: () => void }
  | { kind: 'stream'; stream: ClientStream; cleanup: () => void };

const MAX_STREAM_ID = 0xffffffff;

export class Client extends EventEmitter implements StreamTransport {
  private readonly channel: Channel;
  private readonly pending = new Map<number, Pending>();
  private readonly maxMessageSize: number;
  private readonly log: LogFn;
  private nextId = 1;
  private isClosed = false;

  static connect(path: string, opts: ClientOptions = {}): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new Client(socket, opts));
      });
    });
  }

  constructor(socket: net.Socket, opts: ClientOptions = {}) {
    super();
    this.maxMessageSize = opts.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.log = opts.log ?? (() => {});
    this.channel = new Channel(
      socket,
      {
        frame: (h, data) => this.onFrame(h, data),
        oversize: (h) =>
          this.failCall(
            h.streamId,
            new TtrpcError(Code.RESOURCE_EXHAUSTED, oversizeMessage(h.length, this.maxMessageSize))
          ),
        closed: (err) => this.onClosed(err),
      },
      this.maxMessageSize
    );
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Unary call. Rejects with TtrpcError (UNAVAILABLE "ttrpc: closed" once the connection is gone). */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const id = this.startRequest(service, method, payload, 0, opts, reject);
      if (id === undefined) return;
      const cleanup = this.watchDeadline(id, opts);
      this.pending.set(id, { kind: 'unary', resolve, reject, cleanup });
    });
  }

  /** Server-streaming call: the server's messages as an async iterable; `break` stops listening. */
  serverStream(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): AsyncIterable<Buffer> {
    return this.openStream(service, method, payload, false, opts).messages;
  }

  clientStream(service: string, method: string, opts: CallOptions = {}): ClientStreamCall {
    const s = this.openStream(service, method, Buffer.alloc(0), true, opts);
    return {
      send: (msg) => s.send(msg),
      closeAndRecv: async () => {
        await s.closeSend();
        return s.response;
      },
    };
  }

  bidiStream(service: string, method: string, opts: CallOptions = {}): BidiStreamCall {
    const s = this.openStream(service, method, Buffer.alloc(0), true, opts);
    return {
      send: (msg) => s.send(msg),
      closeSend: () => s.closeSend(),
      [Symbol.asyncIterator]: () => s.messages[Symbol.asyncIterator](),
    };
  }

  /** Close the connection; pending calls fail with UNAVAILABLE and 'close' is emitted. */
  close(): void {
    this.channel.close();
  }

  // ---- StreamTransport ----

  async sendData(id: number, flags: number, data: Uint8Array): Promise<void> {
    if (this.isClosed) throw closedError();
    if (data.length > this.maxMessageSize) {
      throw new TtrpcError(Code.RESOURCE_EXHAUSTED, oversizeMessage(data.length, this.maxMessageSize));
    }
    if (!this.channel.send(id, MessageType.DATA, flags, data)) await this.channel.drained();
  }

  release(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.cleanup();
  }

  // ---- internals ----

  private openStream(
    service: string,
    method: string,
    payload: Uint8Array,
    clientStreaming: boolean,
    opts: CallOptions
  ): ClientStream {
    const flags = clientStreaming ? Flags.REMOTE_OPEN : Flags.REMOTE_CLOSED;
    let early: unknown;
    const id = this.startRequest(service, method, payload, flags, opts, (e) => (early = e));
    const stream = new ClientStream(id ?? 0, this, clientStreaming);
    if (id === undefined) {
      stream.fail(early);
      return stream;
    }
    const cleanup = this.watchDeadline(id, opts);
    this.pending.set(id, { kind: 'stream', stream, cleanup });
    return stream;
  }

  /** Encode and send the Request frame; returns its stream id, or undefined after calling `reject`. */
  private startRequest(
    service: string,
    method: string,
    payload: Uint8Array,
    flags: number,
    opts: CallOptions,
    reject: (e: unknown) => void
  ): number | undefined {
    if (this.isClosed) return void reject(closedError());
    if (opts.signal?.aborted) return void reject(new TtrpcError(Code.CANCELLED, 'context canceled'));
    if (this.nextId > MAX_STREAM_ID)
      return void reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, 'ttrpc: stream ids exhausted'));
    const timeoutNano = opts.timeoutMs !== undefined ? Math.max(1, Math.round(opts.timeoutMs * 1e6)) : 0;
    const body = encodeRequest({
      service,
      method,
      payload: Buffer.from(payload.buffer, payload.byteOffset, payload.length),
      timeoutNano,
      metadata: metadataToPairs(opts.metadata),
    });
    if (body.length > this.maxMessageSize) {
      return void reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, oversizeMessage(body.length, this.maxMessageSize)));
    }
    const id = this.nextId;
    this.nextId += 2;
    this.channel.send(id, MessageType.REQUEST, flags, body);
    return id;
  }

  /** Local deadline and abort: fail the call without waiting for the server; late replies are dropped. */
  private watchDeadline(id: number, opts: CallOptions): () => void {
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(
        () => this.failCall(id, new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded')),
        Math.max(0, opts.timeoutMs)
      );
    }
    const onAbort = () => this.failCall(id, new TtrpcError(Code.CANCELLED, 'context canceled'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    return () => {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
  }

  private failCall(id: number, err: unknown): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.cleanup();
    if (p.kind === 'unary') p.reject(err);
    else p.stream.fail(err);
  }

  private onFrame(h: FrameHeader, data: Buffer): void {
    if (h.type !== MessageType.RESPONSE && h.type !== MessageType.DATA) return; // future types: ignore
    const p = this.pending.get(h.streamId);
    if (!p) {
      this.log('debug', 'ttrpc: received message for unknown/inactive stream', { streamId: h.streamId, type: h.type });
      return;
    }
    if (h.type === MessageType.DATA) {
      if (p.kind === 'unary')
        this.failCall(h.streamId, new TtrpcError(Code.INTERNAL, 'ttrpc: protocol error: data frame on a unary call'));
      else p.stream.onData(h.flags, data);
      return;
    }
    let res: Response;
    try {
      res = decodeResponse(data);
    } catch (err) {
      this.failCall(
        h.streamId,
        new TtrpcError(Code.INTERNAL, `ttrpc: cannot decode response: ${(err as Error).message}`)
      );
      return;
    }
    if (p.kind === 'stream') {
      p.stream.onResponse(res); // releases the id through release()
      return;
    }
    this.pending.delete(h.streamId);
    p.cleanup();
    if (res.status && res.status.code !== Code.OK) p.reject(new TtrpcError(res.status.code, res.status.message));
    else p.resolve(res.payload);
  }

  private onClosed(err: Error | null): void {
    this.isClosed = true;
    if (err) this.log('debug', 'ttrpc: client connection error', { err: err.message });
    const calls = [...this.pending.keys()];
    for (const id of calls) this.failCall(id, closedError());
    this.emit('close');
  }
}
