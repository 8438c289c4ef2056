// Typed client for one shim's tsshim.v1.Shim service.
import { tsshim, google } from '../gen/proto';
import { Client, Code, TtrpcError } from '../ttrpc';
import { decodeStatsSample, SHIM_SERVICE, type StatsSampleMessage } from '../diag/introspection';

/**
 * A shim's Inspect JSON (diag/introspection.ts inspectState) as the CLI reads it. It may come from
 * a shim of another version, so every field may be missing; readers default or coerce each one.
 */
export interface InspectReport {
  version?: string;
  revision?: string;
  pid?: number;
  node?: string;
  started_at?: string;
  metrics_socket?: string | null;
  namespace?: string;
  group?: string;
  containers?: InspectContainer[];
  events?: { sent?: number; retries?: number; discarded?: number; outbox?: { age_ms?: number }[] };
  rpc?: Record<string, { count?: number; errors?: number; total_ms?: number; le_ms?: Record<string, number> }>;
  counters?: { reaped?: number; exitsPublished?: number };
  memory?: { rss?: number };
  fds?: { count?: number };
}

export interface InspectContainer {
  namespace: string;
  id: string;
  bundle?: string;
  status?: string;
  created_at?: string;
  execs?: unknown[];
}

export const CALL_TIMEOUT_MS = 3000;
/** An upgrade probes the new build, quiesces (bounded: 10 s calls + 5 s IO) and re-executes. */
export const UPGRADE_TIMEOUT_MS = 60_000;

export interface UpgradeResult {
  upgraded: boolean;
  wouldUpgrade: boolean;
  reason: string;
  pid: number;
  fromVersion: string;
  fromRevision: string;
  toVersion: string;
  toRevision: string;
}

export interface ContainerRow {
  namespace: string;
  id: string;
  pid: number;
  status: string;
  bundle: string;
  startedAt: Date | null;
  execCount: number;
}

export class ShimClient {
  private constructor(
    readonly socket: string,
    private client: Client
  ) {}

  static async connect(socket: string): Promise<ShimClient> {
    return new ShimClient(socket, await Client.connect(socket));
  }

  async list(): Promise<ContainerRow[]> {
    const res = tsshim.v1.ListResponse.decode(
      await this.client.call(SHIM_SERVICE, 'List', google.protobuf.Empty.encode({}).finish(), {
        timeoutMs: CALL_TIMEOUT_MS,
      })
    );
    return res.containers.map((c) => ({
      namespace: c.namespace ?? '',
      id: c.id ?? '',
      pid: c.pid ?? 0,
      status: c.status ?? '',
      bundle: c.bundle ?? '',
      execCount: c.exec_count ?? 0,
      startedAt:
        c.started_at && Number(c.started_at.seconds) > 0
          ? new Date(Number(c.started_at.seconds) * 1000 + Math.floor((c.started_at.nanos ?? 0) / 1e6))
          : null,
    }));
  }

  async inspect(): Promise<InspectReport> {
    const res = tsshim.v1.InspectResponse.decode(
      await this.client.call(SHIM_SERVICE, 'Inspect', tsshim.v1.InspectRequest.encode({}).finish(), {
        timeoutMs: CALL_TIMEOUT_MS,
      })
    );
    return JSON.parse(res.json);
  }

  /** Samples every intervalMs until close() (or the container is deleted). */
  async *stats(id: string, intervalMs: number): AsyncGenerator<StatsSampleMessage> {
    const req = tsshim.v1.StatsStreamRequest.encode({ id, interval_ms: intervalMs }).finish();
    for await (const m of this.client.serverStream(SHIM_SERVICE, 'Stats', req)) yield decodeStatsSample(m);
  }

  /** Asks the daemon to re-execute itself into the build of `entry` (or only to check, `check`). */
  async upgrade(entry: string, check: boolean, timeoutMs = UPGRADE_TIMEOUT_MS): Promise<UpgradeResult> {
    const res = tsshim.v1.UpgradeResponse.decode(
      await this.client.call(SHIM_SERVICE, 'Upgrade', tsshim.v1.UpgradeRequest.encode({ entry, check }).finish(), {
        timeoutMs,
      })
    );
    return {
      upgraded: !!res.upgraded,
      wouldUpgrade: !!res.would_upgrade,
      reason: res.reason ?? '',
      pid: res.pid ?? 0,
      fromVersion: res.from_version ?? '',
      fromRevision: res.from_revision ?? '',
      toVersion: res.to_version ?? '',
      toRevision: res.to_revision ?? '',
    };
  }

  close(): void {
    this.client.close();
  }
}

/** True for the error a shim without our service answers (e.g. containerd-shim-runc-v2). */
export function isUnimplemented(e: unknown): boolean {
  return e instanceof TtrpcError && e.code === Code.UNIMPLEMENTED;
}
