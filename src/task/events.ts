// Building the containerd.events.* messages the shim publishes (containerd's api/events/task.proto,
// with the fields containerd-shim-runc-v2 fills).
import { containerd } from '../gen/proto';
import type { ExitInfo } from './process';
import { timestamp } from './timestamps';
import { encodeMessage } from '../types';
import { TypeUrl } from '../types/typeurls';

type Msg = Parameters<typeof encodeMessage>[0];
type EventName =
  | 'TaskCreate'
  | 'TaskStart'
  | 'TaskExit'
  | 'TaskDelete'
  | 'TaskExecAdded'
  | 'TaskExecStarted'
  | 'TaskPaused'
  | 'TaskResumed'
  | 'TaskOOM';

/** Where task events go (the shim's publisher outbox); the Task core only hands them over, in order. */
export interface EventSink {
  publish(namespace: string, topic: string, typeUrl: string, value: Uint8Array): void;
}
const E = containerd.events;

export class TaskEvents {
  constructor(private publisher: EventSink) {}

  private send(ns: string, topic: string, name: EventName, type: Msg, body: object): void {
    // Proto3 defaults left out, as Go writes them (exit_status 0 is absent on the wire).
    this.publisher.publish(ns, topic, TypeUrl[name], encodeMessage(type, body));
  }

  create(
    ns: string,
    body: { container_id: string; bundle: string; rootfs: object[]; io: object; checkpoint: string; pid: number }
  ) {
    this.send(ns, '/tasks/create', 'TaskCreate', E.TaskCreate, body);
  }
  start(ns: string, containerId: string, pid: number) {
    this.send(ns, '/tasks/start', 'TaskStart', E.TaskStart, { container_id: containerId, pid });
  }
  exit(ns: string, containerId: string, id: string, pid: number, exit: ExitInfo) {
    this.send(ns, '/tasks/exit', 'TaskExit', E.TaskExit, {
      container_id: containerId,
      id,
      pid,
      exit_status: exit.status,
      exited_at: timestamp(exit),
    });
  }
  delete(ns: string, containerId: string, pid: number, exit: ExitInfo | null) {
    this.send(ns, '/tasks/delete', 'TaskDelete', E.TaskDelete, {
      container_id: containerId,
      pid,
      exit_status: exit?.status ?? 0,
      exited_at: timestamp(exit),
    });
  }
  execAdded(ns: string, containerId: string, execId: string) {
    this.send(ns, '/tasks/exec-added', 'TaskExecAdded', E.TaskExecAdded, {
      container_id: containerId,
      exec_id: execId,
    });
  }
  execStarted(ns: string, containerId: string, execId: string, pid: number) {
    this.send(ns, '/tasks/exec-started', 'TaskExecStarted', E.TaskExecStarted, {
      container_id: containerId,
      exec_id: execId,
      pid,
    });
  }
  paused(ns: string, containerId: string) {
    this.send(ns, '/tasks/paused', 'TaskPaused', E.TaskPaused, { container_id: containerId });
  }
  resumed(ns: string, containerId: string) {
    this.send(ns, '/tasks/resumed', 'TaskResumed', E.TaskResumed, { container_id: containerId });
  }
  oom(ns: string, containerId: string) {
    this.send(ns, '/tasks/oom', 'TaskOOM', E.TaskOOM, { container_id: containerId });
  }
}
