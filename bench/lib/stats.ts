// Small statistics for benchmark samples: medians and p90 over a handful of noisy values.

export interface Sample {
  n: number;
  median: number;
  p90: number;
  min: number;
  max: number;
  values: number[];
}

/** Linear-interpolated percentile (p in 0..100) of unsorted values; NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const pos = (p / 100) * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function sample(values: number[]): Sample {
  const v = values.filter((x) => Number.isFinite(x));
  return {
    n: v.length,
    median: percentile(v, 50),
    p90: percentile(v, 90),
    min: v.length ? Math.min(...v) : NaN,
    max: v.length ? Math.max(...v) : NaN,
    values: v.map((x) => Math.round(x * 1000) / 1000),
  };
}

/** tsshim / runc on the medians; NaN when either side is missing or zero. */
export function ratio(tsshim: Sample | null, runc: Sample | null): number {
  if (!tsshim || !runc || !tsshim.n || !runc.n || runc.median === 0) return NaN;
  return tsshim.median / runc.median;
}

/** Rotates a list by `k` places, so each iteration starts with a different variant. */
export function rotate<T>(items: readonly T[], k: number): T[] {
  const n = items.length;
  if (n === 0) return [];
  const s = ((k % n) + n) % n;
  return [...items.slice(s), ...items.slice(0, s)];
}

/** Milliseconds since the epoch with sub-millisecond precision (comparable with log timestamps). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
