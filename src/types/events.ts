// Event topics the shim publishes and the containerd.events message of each (containerd's api/events/task.proto;
// topics as containerd's runtime/v2 publishes them).
import { containerd } from '../gen/proto';
import type { AnyMessageCodec } from './codec';
import { TypeUrl } from './typeurls';

export const Topic = {
  TaskCreate: '/tasks/create',
  TaskStart: '/tasks/start',
  TaskDelete: '/tasks/delete',
  TaskExit: '/tasks/exit',
  TaskOOM: '/tasks/oom',
  TaskExecAdded: '/tasks/exec-added',
  TaskExecStarted: '/tasks/exec-started',
  TaskPaused: '/tasks/paused',
  TaskResumed: '/tasks/resumed',
  TaskCheckpointed: '/tasks/checkpointed',
} as const;

export type TopicValue = (typeof Topic)[keyof typeof Topic];

export interface EventKind {
  topic: TopicValue;
  typeUrl: string; // Envelope.event.type_url
  codec: AnyMessageCodec;
}

const E = containerd.events;
const KINDS: EventKind[] = [
  { topic: Topic.TaskCreate, typeUrl: TypeUrl.TaskCreate, codec: E.TaskCreate },
  { topic: Topic.TaskStart, typeUrl: TypeUrl.TaskStart, codec: E.TaskStart },
  { topic: Topic.TaskDelete, typeUrl: TypeUrl.TaskDelete, codec: E.TaskDelete },
  { topic: Topic.TaskExit, typeUrl: TypeUrl.TaskExit, codec: E.TaskExit },
  { topic: Topic.TaskOOM, typeUrl: TypeUrl.TaskOOM, codec: E.TaskOOM },
  { topic: Topic.TaskExecAdded, typeUrl: TypeUrl.TaskExecAdded, codec: E.TaskExecAdded },
  { topic: Topic.TaskExecStarted, typeUrl: TypeUrl.TaskExecStarted, codec: E.TaskExecStarted },
  { topic: Topic.TaskPaused, typeUrl: TypeUrl.TaskPaused, codec: E.TaskPaused },
  { topic: Topic.TaskResumed, typeUrl: TypeUrl.TaskResumed, codec: E.TaskResumed },
  { topic: Topic.TaskCheckpointed, typeUrl: TypeUrl.TaskCheckpointed, codec: E.TaskCheckpointed },
];

/** topic -> event type name, e.g. "/tasks/exit" -> "containerd.events.TaskExit". */
export const EVENT_TYPE_BY_TOPIC: ReadonlyMap<string, string> = new Map(KINDS.map((k) => [k.topic, k.typeUrl]));

/** event type name -> topic, e.g. "containerd.events.TaskExit" -> "/tasks/exit". */
export const TOPIC_BY_EVENT_TYPE: ReadonlyMap<string, TopicValue> = new Map(KINDS.map((k) => [k.typeUrl, k.topic]));

/** Everything needed to publish on `topic`; undefined for topics a shim never publishes. */
export function eventKind(topic: string): EventKind | undefined {
  return KINDS.find((k) => k.topic === topic);
}
