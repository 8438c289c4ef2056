// What the introspection service and the metrics endpoint read from a running daemon. The daemon
// (src/daemon/serve.ts) satisfies it; tests pass a fake.
import type { Container } from '../task/container';
import type { RpcStats } from '../task/rpc';

export interface DaemonView {
  service: {
    list(): Container[];
    stats(ns: string, id: string): Promise<{ typeUrl: string; value: Uint8Array }>;
    readonly counters: { reaped: number; exitsPublished: number };
  };
  publisher: {
    pending(): { seq: number; namespace: string; topic: string; at: number }[];
    readonly stats: { sent: number; pending: number; retries: number; discarded: number; journalFailures?: number };
  };
  rpcStats: RpcStats;
  startedAt: Date;
  socket: string;
  namespace: string;
  group: string;
  /** The metrics socket this daemon serves, if any (reported by Inspect). */
  metricsSocket?: string | null;
  idleGc?: { readonly collections: number; readonly skipped?: number; background?(): void };
}
