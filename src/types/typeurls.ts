// type_url values as containerd writes them: the bare proto full name, no "type.googleapis.com/"
// prefix (containerd's typeurl registry names proto types that way); OCI JSON payloads use the
// names typeurl registers for them. The one place these strings are spelled: imports nothing, so
// the light commands (start, delete) may use it without loading generated code.
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
  // what containerd 1.6's Go client sends as task options to runtimes not named io.containerd.runc*
  LegacyCreateOptions: 'containerd.linux.runc.CreateOptions',
  LegacyRuncOptions: 'containerd.linux.runc.RuncOptions',
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

/** The runtime option types the shim understands (src/task/options.ts decodeOptions). */
export const RUNTIME_OPTION_TYPE_URLS: readonly string[] = Object.freeze([
  TypeUrl.RuncOptions,
  TypeUrl.RuntimeOptions,
  TypeUrl.LegacyCreateOptions,
  TypeUrl.LegacyRuncOptions,
]);

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
