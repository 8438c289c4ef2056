// google.protobuf.Any packing with containerd's bare type_urls.
import { containerd, google, io, runtimeoptions } from '../gen/proto';
import { encodeMessage, type AnyMessageCodec, type MessageCodec } from './codec';
import { TypeUrl, typeNameOf } from './typeurls';

export function packAny(typeUrl: string, value: Uint8Array): google.protobuf.Any {
  const any = google.protobuf.Any.create({ type_url: typeUrl });
  if (value.length > 0) any.value = value; // proto3: empty bytes stay off the wire
  return any;
}

/** Encode `message` with `codec` (Go-identical bytes) and wrap it in an Any. */
export function packMessage<I extends object, M extends I>(
  typeUrl: string,
  codec: MessageCodec<I, M>,
  message: I
): google.protobuf.Any {
  return packAny(typeUrl, encodeMessage(codec, message));
}

/**
 * Decode the Any's value with `codec`. With `typeUrl`, a different type name in the Any is a
 * TypeError (a "type.googleapis.com/" prefix is tolerated).
 */
export function unpackAny<I extends object, M extends I>(
  any: google.protobuf.IAny | null | undefined,
  codec: MessageCodec<I, M>,
  typeUrl?: string
): M {
  if (!any) throw new TypeError('no Any value');
  if (typeUrl !== undefined && typeNameOf(any.type_url) !== typeNameOf(typeUrl)) {
    throw new TypeError(`unexpected type_url ${JSON.stringify(any.type_url ?? '')}, want ${typeUrl}`);
  }
  return codec.decode(any.value ?? new Uint8Array(0));
}

/** Codecs of the protobuf types that travel inside an Any, by type name. */
export const ANY_CODECS: ReadonlyMap<string, AnyMessageCodec> = new Map<string, AnyMessageCodec>([
  [TypeUrl.TaskCreate, containerd.events.TaskCreate],
  [TypeUrl.TaskStart, containerd.events.TaskStart],
  [TypeUrl.TaskDelete, containerd.events.TaskDelete],
  [TypeUrl.TaskIO, containerd.events.TaskIO],
  [TypeUrl.TaskExit, containerd.events.TaskExit],
  [TypeUrl.TaskOOM, containerd.events.TaskOOM],
  [TypeUrl.TaskExecAdded, containerd.events.TaskExecAdded],
  [TypeUrl.TaskExecStarted, containerd.events.TaskExecStarted],
  [TypeUrl.TaskPaused, containerd.events.TaskPaused],
  [TypeUrl.TaskResumed, containerd.events.TaskResumed],
  [TypeUrl.TaskCheckpointed, containerd.events.TaskCheckpointed],
  [TypeUrl.RuncOptions, containerd.runc.v1.Options],
  [TypeUrl.CheckpointOptions, containerd.runc.v1.CheckpointOptions],
  [TypeUrl.ProcessDetails, containerd.runc.v1.ProcessDetails],
  [TypeUrl.RuntimeOptions, runtimeoptions.v1.Options],
  [TypeUrl.CgroupsV1Metrics, io.containerd.cgroups.v1.Metrics],
  [TypeUrl.CgroupsV2Metrics, io.containerd.cgroups.v2.Metrics],
  [TypeUrl.RuntimeInfo, containerd.types.RuntimeInfo],
]);

/** Decode an Any whose type is one of ANY_CODECS; undefined for other (e.g. OCI JSON) types. */
export function decodeKnownAny(
  any: google.protobuf.IAny | null | undefined
): { typeName: string; message: object } | undefined {
  if (!any) return undefined;
  const typeName = typeNameOf(any.type_url);
  const codec = ANY_CODECS.get(typeName);
  if (!codec) return undefined;
  return { typeName, message: codec.decode(any.value ?? new Uint8Array(0)) };
}
