// How `start` talks to the daemon that ran it. One binary serves containerd 1.6 to 2.4, so the
// answer is chosen from what the caller sent, never from a configured version:
//
//   stdin holds BootstrapParams whose instance_id/namespace equal -id/-namespace
//                                        -> containerd 2.3+  -> protobuf BootstrapResult
//   MAX_SHIM_VERSION>=2, GRPC_ADDRESS == -address, NAMESPACE == -namespace
//                                        -> containerd 1.7-2.2 -> JSON {"version":2,...}
//   anything else                        -> containerd 1.6   -> plain unix:// address
//
// A wrong guess towards "plain" is harmless (every daemon accepts it); a wrong guess towards
// JSON breaks 1.6 (it would dial the JSON text as an abstract socket name), hence the strict
// 1.7+ test: all three variables set by the daemon itself, matching the flags.
// We always answer version 2 (Task v2): version 3 would promise containerd 2.x's sandbox
// semantics (the Sandbox API next to Task v3), which tsshim does not implement.
import { Reader, Writer } from 'protobufjs/minimal';
import type { ShimFlags } from './flags';
import { RUNTIME_OPTION_TYPE_URLS } from '../types/typeurls';

export type DaemonGeneration = 'plain' | 'json' | 'protobuf';

export const TASK_API_VERSION = 2;
/** The option types task/options decodes (from types/typeurls, which loads no generated code). */
export const RUNTIME_OPTION_TYPES: readonly string[] = RUNTIME_OPTION_TYPE_URLS;
export const PROTOCOL = 'ttrpc';

/** A serialized google.protobuf.Any, kept as fields so no generated code is needed here. */
export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** The BootstrapParams fields tsshim reads; see proto/containerd/runtime/bootstrap/v1. */
export interface BootstrapParams {
  instance_id: string;
  namespace: string;
  log_level: number | string;
  containerd_version: string;
  containerd_ttrpc_address: string;
  containerd_grpc_address: string;
  containerd_binary: string;
  extensions: AnyMessage[];
  socket_dir?: string;
}

/** BootstrapParams' string fields (log_level may be either a number or a string). */
type StringParam = {
  [K in keyof BootstrapParams]-?: BootstrapParams[K] extends string | undefined ? K : never;
}[keyof BootstrapParams];

export interface StartRequest {
  generation: DaemonGeneration;
  params: BootstrapParams | null;
  /** The runtime options as a serialized Any (what 1.6-2.2 put on stdin), or empty. */
  options: Buffer;
}

const WIRE_VARINT = 0;
const WIRE_BYTES = 2;

/** protobufjs reads Buffers with a BufferReader that silently clamps truncated strings; a plain
 *  Uint8Array view gets the bounds-checking Reader, so malformed input throws. */
export function strictReader(bytes: Uint8Array): Reader {
  return Reader.create(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
}

function decodeAny(bytes: Uint8Array): AnyMessage {
  const r = strictReader(bytes);
  const any: AnyMessage = { type_url: '', value: new Uint8Array() };
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | WIRE_BYTES)) any.type_url = r.string();
    else if (tag === ((2 << 3) | WIRE_BYTES)) any.value = r.bytes();
    else r.skipType(tag & 7);
  }
  return any;
}

function decodeExtension(bytes: Uint8Array): AnyMessage | null {
  const r = strictReader(bytes);
  let value: AnyMessage | null = null;
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | WIRE_BYTES)) value = decodeAny(r.bytes());
    else r.skipType(tag & 7);
  }
  return value;
}

/**
 * Decodes BootstrapParams, checking every wire type (the generated decoder does not), so a
 * payload of another shape throws instead of yielding garbage. log_level is accepted as a
 * varint (enum) or bytes (string), the two forms upstream has shipped.
 */
export function decodeBootstrapParams(bytes: Uint8Array): BootstrapParams {
  const r = strictReader(bytes);
  const p: BootstrapParams = {
    instance_id: '',
    namespace: '',
    log_level: 0,
    containerd_version: '',
    containerd_ttrpc_address: '',
    containerd_grpc_address: '',
    containerd_binary: '',
    extensions: [],
  };
  const strings: Record<number, StringParam> = {
    1: 'instance_id',
    2: 'namespace',
    4: 'containerd_version',
    5: 'containerd_ttrpc_address',
    6: 'containerd_grpc_address',
    7: 'containerd_binary',
    9: 'socket_dir',
  };
  while (r.pos < r.len) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 0) throw new Error('invalid field number 0');
    if (field in strings) {
      if (wire !== WIRE_BYTES) throw new Error(`field ${field}: wire type ${wire}, want 2`);
      p[strings[field]] = r.string();
    } else if (field === 3 && wire === WIRE_VARINT) {
      p.log_level = r.int32();
    } else if (field === 3 && wire === WIRE_BYTES) {
      p.log_level = r.string();
    } else if (field === 8) {
      if (wire !== WIRE_BYTES) throw new Error(`field 8: wire type ${wire}, want 2`);
      const ext = decodeExtension(r.bytes());
      if (ext) p.extensions.push(ext);
    } else {
      r.skipType(wire); // unknown fields of a newer containerd; throws on invalid wire types
    }
  }
  return p;
}

/**
 * containerd 2.3+'s own test (pkg/shim/compat.go): stdin is BootstrapParams only when it decodes
 * and names the same instance and namespace as the flags. Runtime options (an Any: field 1
 * type_url, field 2 value) decode as BootstrapParams too, but never with that identity.
 */
export function parseBootstrapParams(stdin: Uint8Array, id: string, namespace: string): BootstrapParams | null {
  if (stdin.length === 0) return null;
  let p: BootstrapParams;
  try {
    p = decodeBootstrapParams(stdin);
  } catch {
    return null;
  } // not BootstrapParams: the older stdin forms (doc above)
  return p.instance_id === id && p.namespace === namespace ? p : null;
}

/** 1.7+ add MAX_SHIM_VERSION, GRPC_ADDRESS and NAMESPACE to the shim's environment; 1.6 none. */
export function looksLike17Plus(env: NodeJS.ProcessEnv, flags: Pick<ShimFlags, 'address' | 'namespace'>): boolean {
  const max = Number(env.MAX_SHIM_VERSION);
  return Number.isInteger(max) && max >= 2 && env.GRPC_ADDRESS === flags.address && env.NAMESPACE === flags.namespace;
}

/** The known runtime options among the extensions (options types of task/options), else the first. */
export function optionsExtension(params: BootstrapParams, knownTypes: readonly string[]): AnyMessage | null {
  const bare = (url: string) => url.replace(/^.*\//, '');
  return params.extensions.find((e) => knownTypes.includes(bare(e.type_url))) ?? params.extensions[0] ?? null;
}

export function encodeAny(any: AnyMessage): Buffer {
  // Hand-encoded like decodeAny: field 1 string, field 2 bytes (empty fields omitted, as Go does).
  const w = Writer.create();
  if (any.type_url) w.uint32((1 << 3) | WIRE_BYTES).string(any.type_url);
  if (any.value.length) w.uint32((2 << 3) | WIRE_BYTES).bytes(any.value);
  return Buffer.from(w.finish());
}

/** Reads what the daemon sent to `start`: its generation and the runtime options to honour. */
export function readStartRequest(
  stdin: Buffer,
  env: NodeJS.ProcessEnv,
  flags: Pick<ShimFlags, 'id' | 'namespace' | 'address'>,
  knownOptionTypes = RUNTIME_OPTION_TYPES
): StartRequest {
  const params = parseBootstrapParams(stdin, flags.id, flags.namespace);
  if (params) {
    const ext = optionsExtension(params, knownOptionTypes);
    return { generation: 'protobuf', params, options: ext ? encodeAny(ext) : Buffer.alloc(0) };
  }
  return { generation: looksLike17Plus(env, flags) ? 'json' : 'plain', params: null, options: stdin };
}

export function encodeBootstrapResult(address: string, version = TASK_API_VERSION, protocol = PROTOCOL): Buffer {
  const w = Writer.create();
  w.uint32((1 << 3) | WIRE_VARINT).int32(version);
  w.uint32((2 << 3) | WIRE_BYTES).string(address);
  w.uint32((3 << 3) | WIRE_BYTES).string(protocol);
  return Buffer.from(w.finish());
}

/** What `start` prints for a daemon of that generation. `address` is the plain unix:// address. */
export function formatStartReply(address: string, generation: DaemonGeneration): Buffer {
  switch (generation) {
    case 'protobuf':
      return encodeBootstrapResult(address);
    case 'json':
      return Buffer.from(JSON.stringify({ version: TASK_API_VERSION, address, protocol: PROTOCOL }));
    case 'plain':
      return Buffer.from(address);
  }
}
