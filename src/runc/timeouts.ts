// How long a runc run may take. containerd sends a deadline with most requests (ttrpc timeout_nano)
// and the shim honours it; these are the bounds when it sends none, and for clean-up after a failure.

/** Parses "90", "90s", "1500ms", "2m" (a bare number is seconds); undefined when unset or invalid. */
export function parseDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
  return n > 0 ? Math.round(n) : undefined;
}

/** "300ms", "10s", "2.5s": for error messages a person reads. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
}

/**
 * Deadline of a runc run when containerd sent none, unless configured (TSSHIM_RUNC_TIMEOUT): 120 s
 * like the Go shim's. A runtime that hangs answers the RPC with an error after this.
 */
export const DEFAULT_RUNC_TIMEOUT_MS = 120_000;

/**
 * Clean-up after a failed or abandoned operation (`delete --force` of a create that did not finish)
 * gets its own short bound: the runtime that just hung will likely hang again, and containerd is
 * waiting for the answer.
 */
export function cleanupTimeoutMs(runTimeoutMs: number): number {
  return Math.min(10_000, runTimeoutMs);
}
