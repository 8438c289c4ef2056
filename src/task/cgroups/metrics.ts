// Stats entry point: one call for either cgroup version, answering with the type URL containerd
// type-switches on, and the encoded Any for the Stats reply.
import type { CgroupHandle } from './discovery';
import { CgroupNotFoundError } from './errors';
import { encodeMetricsV1, encodeMetricsV2 } from './encode';
import { CgroupFiles, exists } from './files';
import { collectV1, type MetricsV1, type V1Options } from './stats-v1';
import { collectV2, type MetricsV2 } from './stats-v2';
import { TypeUrl } from '../../types/typeurls';

export const METRICS_V1_TYPE_URL = TypeUrl.CgroupsV1Metrics;
export const METRICS_V2_TYPE_URL = TypeUrl.CgroupsV2Metrics;

export type CollectedMetrics =
  | { typeUrl: typeof METRICS_V1_TYPE_URL; metrics: MetricsV1 }
  | { typeUrl: typeof METRICS_V2_TYPE_URL; metrics: MetricsV2 };

// The open files of each handle that was asked for statistics (files.ts CgroupFiles); the Task
// service releases them when it deletes the container.
const openFiles = new WeakMap<CgroupHandle, CgroupFiles>();

function filesOf(h: CgroupHandle): CgroupFiles {
  let files = openFiles.get(h);
  if (!files) openFiles.set(h, (files = new CgroupFiles()));
  return files;
}

/** Closes the cgroup files Stats calls kept open for this handle (on Delete). */
export function releaseCgroupFiles(h: CgroupHandle | null | undefined): void {
  if (!h) return;
  openFiles.get(h)?.close();
  openFiles.delete(h);
}

/**
 * Reads the cgroup's statistics. Throws CgroupNotFoundError (-> NotFound) when the handle is null
 * or the cgroup is gone; other read or parse failures propagate (-> Unknown). The files read stay
 * open for the next call until releaseCgroupFiles (or the process-wide bound closes them).
 */
export async function collectMetrics(
  h: CgroupHandle | null | undefined,
  opts: V1Options = {}
): Promise<CollectedMetrics> {
  if (!h) throw new CgroupNotFoundError();
  const files = filesOf(h);
  try {
    if (h.version === 2) return { typeUrl: METRICS_V2_TYPE_URL, metrics: await collectV2(h.dir, files.read) };
    // Deleted as soon as one of its directories is gone (the Go library's rule, ErrCgroupDeleted).
    const dirs = Object.values(h.paths);
    const present = await Promise.all(dirs.map(exists));
    if (dirs.length === 0 || !present.every(Boolean)) {
      files.close(); // nothing left worth keeping open
      throw new CgroupNotFoundError(dirs.join(', '));
    }
    return { typeUrl: METRICS_V1_TYPE_URL, metrics: await collectV1(h.paths, opts, files.read) };
  } finally {
    files.touch();
  }
}

/** Protobuf bytes of the metrics message (encode.ts: written directly, no protobufjs objects). */
export function encodeMetrics(c: CollectedMetrics): Uint8Array {
  return c.typeUrl === METRICS_V2_TYPE_URL ? encodeMetricsV2(c.metrics) : encodeMetricsV1(c.metrics);
}

/** google.protobuf.Any for StatsResponse.stats (keep-case field names). */
export function metricsAny(c: CollectedMetrics): { type_url: string; value: Uint8Array } {
  return { type_url: c.typeUrl, value: encodeMetrics(c) };
}

/** collectMetrics + encodeMetrics: what the Task service's Stats returns as its Any. */
export async function collectEncodedMetrics(
  h: CgroupHandle | null | undefined,
  opts: V1Options = {}
): Promise<{ typeUrl: string; value: Uint8Array }> {
  const c = await collectMetrics(h, opts);
  return { typeUrl: c.typeUrl, value: encodeMetrics(c) };
}
