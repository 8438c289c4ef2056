// Waiting helpers for every suite: a promise sleep and a poll-until-true with a named timeout.
// Tests assert properties, never timings: a timeout here only bounds how long a failure takes.

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface UntilOptions {
  /** Give up after this long (default 15 s). */
  timeoutMs?: number;
  /** Poll interval (default 50 ms). */
  everyMs?: number;
  /** Treat an error thrown by fn as "not yet" and name the last one in the timeout error. */
  retryErrors?: boolean;
  /** More context for the timeout error (a log tail, the state seen last). */
  detail?: () => string;
}

/**
 * Polls fn until it returns a truthy value and returns that value; throws after the timeout naming
 * `what`. The third argument is the timeout in ms or the options.
 */
export async function until<T>(
  fn: () => T | Promise<T>,
  what: string,
  opts: number | UntilOptions = {}
): Promise<NonNullable<T>> {
  const o = typeof opts === 'number' ? { timeoutMs: opts } : opts;
  const timeoutMs = o.timeoutMs ?? 15_000;
  const end = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      lastError = undefined;
    } catch (e) {
      if (!o.retryErrors) throw e;
      lastError = e;
    }
    if (Date.now() > end) {
      const last = lastError ? `; last error: ${(lastError as Error).message ?? String(lastError)}` : '';
      const detail = o.detail ? `\n${o.detail()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}${detail}`);
    }
    await sleep(o.everyMs ?? 50);
  }
}
