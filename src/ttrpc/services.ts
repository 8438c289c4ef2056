// Service registry: maps "service" + "method" to a handler. Knows nothing of sockets.
import type { Metadata } from './metadata';
import { Code, TtrpcError } from './status';

export interface CallContext {
  service: string;
  method: string;
  metadata: Metadata;
  /** Absolute deadline in ms since the epoch, from the request's timeout_nano. */
  deadline?: number;
  /** Aborted when the deadline passes, the connection is lost, or the server shuts down hard. */
  signal: AbortSignal;
}

export type UnaryHandler = (payload: Buffer, ctx: CallContext) => Promise<Uint8Array> | Uint8Array;
export type SendFn = (msg: Uint8Array) => Promise<void>;
export type ServerStreamHandler = (payload: Buffer, ctx: CallContext, send: SendFn) => Promise<void>;
/** Client-streaming: reads the client's messages, answers with one reply. */
export type ClientStreamHandler = (messages: AsyncIterable<Buffer>, ctx: CallContext) => Promise<Uint8Array>;
/** Bidirectional: reads the client's messages while sending its own. */
export type BidiStreamHandler = (messages: AsyncIterable<Buffer>, ctx: CallContext, send: SendFn) => Promise<void>;

export type MethodEntry =
  | { kind: 'unary'; handler: UnaryHandler }
  | { kind: 'server-stream'; handler: ServerStreamHandler }
  | { kind: 'client-stream'; handler: ClientStreamHandler }
  | { kind: 'bidi-stream'; handler: BidiStreamHandler };

export class ServiceRegistry {
  private readonly services = new Map<string, Map<string, MethodEntry>>();

  add(service: string, method: string, entry: MethodEntry): void {
    let methods = this.services.get(service);
    if (!methods) this.services.set(service, (methods = new Map()));
    if (methods.has(method)) throw new Error(`duplicate method ${service}/${method} registered`);
    methods.set(method, entry);
  }

  /** Throws UNIMPLEMENTED with Go's exact messages ("service X" / "method Y"). */
  resolve(service: string, method: string): MethodEntry {
    const methods = this.services.get(service);
    if (!methods) throw new TtrpcError(Code.UNIMPLEMENTED, `service ${service}`);
    const entry = methods.get(method);
    if (!entry) throw new TtrpcError(Code.UNIMPLEMENTED, `method ${method}`);
    return entry;
  }
}
