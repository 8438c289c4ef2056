// type_url values as containerd writes them: the bare proto full name, no
// "type.googleapis.com/" prefix (task-api.md 1.1); OCI JSON payloads use typeurl's own names.
export const TypeUrl = {
  // events (containerd.events)
  TaskCreate: 'containerd.events.TaskCreate',
  TaskStart: 'containerd.events.TaskStart',
  TaskDelete: 'containerd.events.TaskDelete',
  TaskIO: 'containerd.events.TaskIO',
  TaskExit: 'containerd.events.TaskExit',
  TaskOOM: 'containerd.events.TaskOOM',
  TaskExecAdded: 'containerd.events.TaskExecAdded',
  TaskExecStarted: 'containerd.events.TaskExecStarted',
  TaskPaused: 'containerd.events.TaskPaused',
  TaskResumed: 'containerd.events.TaskResumed',
  TaskCheckpointed: 'containerd.events.TaskCheckpointed',
  // options
  RuncOptions: 'containerd.runc.v1.Options',
  CheckpointOptions: 'containerd.runc.v1.CheckpointOptions',
  ProcessDetails: 'containerd.runc.v1.ProcessDetails',
  RuntimeOptions: 'runtimeoptions.v1.Options',
  // stats
  CgroupsV1Metrics: 'io.containerd.cgroups.v1.Metrics',
  CgroupsV2Metrics: 'io.containerd.cgroups.v2.Metrics',
  // -info
  RuntimeInfo: 'containerd.types.RuntimeInfo',
  // OCI JSON (value = JSON text)
  OciProcess: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
  OciLinuxResources: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
  OciSpec: 'types.containerd.io/opencontainers/runtime-spec/1/Spec',
  // runtime-spec features as registered by containerd 2.x (RuntimeInfo.features)
  OciFeatures: 'types.containerd.io/opencontainers/runtime-spec/1/features/Features',
} as const;

export type TypeUrlValue = (typeof TypeUrl)[keyof typeof TypeUrl];

const GOOGLE_PREFIX = 'type.googleapis.com/';

/** Proto type name of a type_url: tolerates the "type.googleapis.com/" prefix other clients add. */
export function typeNameOf(typeUrl: string | null | undefined): string {
  const url = typeUrl ?? '';
  return url.startsWith(GOOGLE_PREFIX) ? url.slice(GOOGLE_PREFIX.length) : url;
}

/** Service names as they appear in ttrpc Request.service. */
export const ServiceName = {
  TaskV2: 'containerd.task.v2.Task',
  TaskV3: 'containerd.task.v3.Task',
  Events: 'containerd.services.events.ttrpc.v1.Events',
  Shim: 'tsshim.v1.Shim',
} as const;
