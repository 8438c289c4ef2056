// cgroup discovery, statistics and OOM monitoring for the Task service.
export {
  cgroupForPid,
  cgroupFromSpecPath,
  cgroupPathFromSpec,
  detectCgroupMode,
  type CgroupHandle,
  type CgroupMode,
} from './discovery';
export { CgroupNotFoundError } from './errors';
export {
  collectMetrics,
  collectEncodedMetrics,
  encodeMetrics,
  metricsAny,
  METRICS_V1_TYPE_URL,
  METRICS_V2_TYPE_URL,
  releaseCgroupFiles,
  type CollectedMetrics,
} from './metrics';
export type { MetricsV1 } from './stats-v1';
export type { MetricsV2 } from './stats-v2';
export { OomWatcher, type OomWatcherOptions, type OomWatchHandover } from './oom';
export { u64ToBigInt, type U64 } from './u64';
export { openCgroupFileCount, MAX_OPEN_CGROUP_FILES } from './files';
