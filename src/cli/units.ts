// Human-readable units for the operator CLI: IEC sizes (12.3MiB) and short durations (3m12s).

const IEC = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 0 -> "0B", 1536 -> "1.5KiB", 12.9e6 -> "12.3MiB"; one decimal below 100, none above. */
export function humanBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  let i = 0;
  while (n >= 1024 && i < IEC.length - 1) {
    n /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(n)}B`;
  return `${n < 100 ? n.toFixed(1) : Math.round(n)}${IEC[i]}`;
}

/** 950 -> "950ms", 5_000 -> "5s", 192_000 -> "3m12s", 7_380_000 -> "2h3m", 93_600_000 -> "1d2h". */
export function humanDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.floor(ms)}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${m % 60}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

/** 12.345 -> "12.3%"; null (not measurable yet) -> "-". */
export function humanPercent(p: number | null): string {
  return p === null || !Number.isFinite(p) ? '-' : `${p.toFixed(1)}%`;
}
