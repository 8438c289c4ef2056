// Protocol types: short names for the generated protobufjs namespaces plus the helpers every
// layer needs (Any, Timestamp, int64, type_urls, event topics). Field names are the proto
// names (keep-case): `exec_id`, `exited_at`. int64/uint64 fields decode as Long: use toNumber.
import * as gen from '../gen/proto';

export import protobuf = gen.google.protobuf; // Any, Empty, Timestamp
export import rpc = gen.google.rpc; // Status
export import ttrpc = gen.ttrpc; // Request, Response, KeyValue
export import task = gen.containerd.task.v2; // Task API messages (also used by v3)
export import taskV3 = gen.containerd.task.v3; // service only; messages are task.*
export import ctypes = gen.containerd.types; // Mount, Metric, RuntimeInfo, RuntimeVersion
export import v1types = gen.containerd.v1.types; // Status enum, ProcessInfo
export import events = gen.containerd.events; // TaskCreate, TaskExit, ...
export import eventsService = gen.containerd.services.events.ttrpc.v1; // ForwardRequest, Envelope
export import runc = gen.containerd.runc.v1; // Options, CheckpointOptions, ProcessDetails
export import runtimeoptions = gen.runtimeoptions.v1; // Options{type_url, config_path, config_body}
export import cgroupsV1 = gen.io.containerd.cgroups.v1;
export import cgroupsV2 = gen.io.containerd.cgroups.v2;
export import bootstrap = gen.containerd.runtime.bootstrap.v1;
export import shim = gen.tsshim.v1; // tsshim's own diagnostics service

/** containerd.v1.types.Status: UNKNOWN 0, CREATED 1, RUNNING 2, STOPPED 3, PAUSED 4, PAUSING 5. */
export const TaskStatus = gen.containerd.v1.types.Status;
export type TaskStatus = gen.containerd.v1.types.Status;

export { toNumber, toBigInt, type LongLike } from './long';
export {
  GO_ZERO_SECONDS,
  GO_ZERO_TIMESTAMP,
  goZeroTimestamp,
  isGoZeroTimestamp,
  timestampFromDate,
  timestampFromNanos,
  timestampNow,
  timestampToDate,
  timestampToNanos,
} from './timestamp';
export { TypeUrl, type TypeUrlValue, ServiceName, typeNameOf, RUNTIME_OPTION_TYPE_URLS } from './typeurls';
export { encodeMessage, decodeMessage, type MessageCodec } from './codec';
export { packAny, packMessage, unpackAny, decodeKnownAny, ANY_CODECS } from './any';
export { Topic, type TopicValue, type EventKind, EVENT_TYPE_BY_TOPIC, TOPIC_BY_EVENT_TYPE, eventKind } from './events';
