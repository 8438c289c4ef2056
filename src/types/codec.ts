// Encoding with Go-identical bytes. protobufjs static encoders write every field that is an own
// property of the message, so `{exit_status: 0}` becomes `20 00` while Go (proto3) writes
// nothing. encodeMessage drops proto3 default scalars first; message-typed fields are kept even
// when empty (an empty Timestamp is a real value), exactly as Go does.
import { util, type Reader, type Writer, type IConversionOptions } from 'protobufjs/minimal';

/** The static side of a generated message class (e.g. `containerd.task.v2.StateResponse`). */
export interface MessageCodec<I extends object, M extends I = I> {
  encode(message: I, writer?: Writer): Writer;
  decode(reader: Reader | Uint8Array, length?: number): M;
  /**
   * Not in the shim's bundle but for the types its events reach (scripts/bundle-slim.mjs, step 3),
   * like toObject, which only tests and the CLI call.
   */
  fromObject?(object: Record<string, unknown>): M;
  toObject?(message: M, options?: IConversionOptions): Record<string, unknown>;
}

/**
 * Any generated message class, for registries of several (Any payloads, event kinds): a method's
 * parameters are compared bivariantly, so every class's own message type fits `object`.
 */
export type AnyMessageCodec = MessageCodec<object, object>;

type Obj = Record<string, unknown>;

function isMessage(v: unknown): v is Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return false;
  const ctor = (v as { constructor?: { encode?: unknown; decode?: unknown } }).constructor;
  return typeof ctor?.encode === 'function' && typeof ctor?.decode === 'function';
}

function isLongZero(v: unknown): boolean {
  if (typeof v === 'number') return v === 0;
  if (typeof v === 'string') return v === '0';
  if (typeof v === 'bigint') return v === 0n;
  const l = v as { low?: unknown; high?: unknown };
  return typeof v === 'object' && v !== null && l.low === 0 && l.high === 0;
}

function isDefault(value: unknown, def: unknown): boolean {
  if (value === null || value === undefined) return true;
  if (def === null) return false; // message field: presence matters
  if (Array.isArray(value)) return value.length === 0;
  if (def === util.emptyObject) return Object.keys(value as Obj).length === 0; // map
  if (ArrayBuffer.isView(value)) return value.byteLength === 0; // bytes
  if (typeof def === 'object' && def !== null) return isLongZero(value); // int64 default is a Long
  if (typeof def === 'number' && typeof value === 'object') return isLongZero(value); // int64 without long
  return value === def; // string, bool, number, enum
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (!isMessage(value)) return value;
  const proto = Object.getPrototypeOf(value) as Obj;
  const Ctor = value.constructor as new () => Obj;
  const out = new Ctor();
  for (const key of Object.keys(value)) {
    const v = value[key];
    if (isDefault(v, proto[key])) {
      delete out[key]; // constructors pre-set empty repeated/map fields; harmless either way
      continue;
    }
    if (proto[key] === util.emptyObject && typeof v === 'object') {
      const map: Obj = {};
      for (const [k, mv] of Object.entries(v as Obj)) map[k] = canonical(mv);
      out[key] = map;
    } else {
      out[key] = canonical(v);
    }
  }
  return out;
}

/** Serialize like Go's proto3 marshaller: proto3 default scalars are left out. */
export function encodeMessage<I extends object, M extends I>(codec: MessageCodec<I, M>, value: I): Uint8Array {
  // A type without fromObject (one the bundle's events do not reach) is encoded as given: valid
  // protobuf, with any default scalar set in `value` on the wire (Go would leave it off).
  if (!codec.fromObject) return codec.encode(value).finish();
  const message = canonical(codec.fromObject(value as Record<string, unknown>)) as M;
  return codec.encode(message).finish();
}

export function decodeMessage<I extends object, M extends I>(codec: MessageCodec<I, M>, bytes: Uint8Array): M {
  return codec.decode(bytes);
}
