// Renders results: a fixed-width table for stdout, Markdown, JSON and a hand-written SVG bar
// chart of tsshim/runc ratios (log scale, 1.0 in the middle).
import type { Results, Row } from './results';

export interface RunInfo {
  date: string;
  host: string;
  quick: boolean;
  node: string;
  containerd: string;
  runc: string;
  revision: string;
  cpus: number;
  durationS: number;
  /** 1-minute load average at start and end: other work on the machine inflates absolute numbers. */
  load: [number, number];
}

function fmt(v: number | undefined | null, unit: string): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return '-';
  if (unit === 'calls/s' || (Math.abs(v) >= 1000 && unit !== 'MiB')) return v.toFixed(0);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function verdict(row: Row): string {
  if (!row.target) return '';
  const m = row.target.met === null ? 'n/a' : row.target.met ? 'MET' : 'NOT MET';
  return `${m} (${row.target.text})`;
}

function cells(row: Row): string[] {
  return [
    row.suite,
    row.mode,
    row.name,
    row.unit,
    fmt(row.runc?.median, row.unit),
    fmt(row.runc?.p90, row.unit),
    fmt(row.tsshim?.median, row.unit),
    fmt(row.tsshim?.p90, row.unit),
    Number.isFinite(row.ratio) ? row.ratio.toFixed(2) : '-',
    verdict(row),
  ];
}

const HEAD = [
  'suite',
  'mode',
  'measure',
  'unit',
  'runc med',
  'runc p90',
  'tsshim med',
  'tsshim p90',
  'ratio',
  'target',
];

export function textTable(results: Results): string {
  const rows = results.rows.map(cells);
  const widths = HEAD.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const numeric = new Set([4, 5, 6, 7, 8]);
  const line = (r: string[]) =>
    r
      .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(HEAD), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdown(results: Results, info: RunInfo, svgName: string): string {
  const out: string[] = [];
  out.push(`# tsshim vs runc.v2 benchmark, ${info.date} on ${info.host}${info.quick ? ' (--quick)' : ''}`, '');
  out.push(
    `node ${info.node}, ${info.containerd}, ${info.runc}, ${info.cpus} CPUs, tsshim revision ${info.revision}, ${info.durationS.toFixed(0)} s, load average ${info.load[0].toFixed(1)} at start, ${info.load[1].toFixed(1)} at end.`
  );
  out.push(
    'runc and tsshim run in the same containerd(s), interleaved with the order rotated every iteration; ratio = tsshim median / runc median'
  );
  out.push('(lower is better for ms and MiB, higher for MiB/s and calls/s). Noise on this machine is about ±10%.', '');
  out.push(`![ratios](${svgName})`, '');
  const targets = results.rows.filter((r) => r.target);
  if (targets.length) {
    out.push('## Targets', '', '| measure | mode | value | target | met |', '|---|---|---|---|---|');
    for (const r of targets) {
      const v =
        r.target!.on === 'ratio'
          ? `ratio ${Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : '-'}`
          : `${fmt(r.tsshim?.median, r.unit)} ${r.unit}`;
      out.push(
        `| ${r.name} | ${r.mode} | ${v} | ${r.target!.text} | ${r.target!.met === null ? 'n/a' : r.target!.met ? 'yes' : '**no**'} |`
      );
    }
    out.push('');
  }
  let suite = '';
  for (const r of results.rows) {
    if (r.suite !== suite) {
      suite = r.suite;
      out.push(
        '',
        `## ${suite}`,
        '',
        '| mode | measure | unit | runc median | runc p90 | tsshim median | tsshim p90 | ratio | n |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|'
      );
    }
    const c = cells(r);
    out.push(
      `| ${r.mode} | ${r.name}${r.note ? ` (${r.note})` : ''} | ${r.unit} | ${c[4]} | ${c[5]} | ${c[6]} | ${c[7]} | ${c[8]} | ${r.runc?.n ?? 0}/${r.tsshim?.n ?? 0} |`
    );
  }
  if (results.notes.length) out.push('', '## Notes', '', ...results.notes.map((n) => `- ${n}`));
  if (Object.keys(results.extra).length) {
    out.push('', '## Profile details', '', '```json', JSON.stringify(results.extra, null, 1), '```');
  }
  return out.join('\n') + '\n';
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Horizontal bars of log2(ratio), oriented so that right of 1.0 is always "tsshim worse". */
export function svgChart(results: Results, title: string): string {
  const rows = results.rows.filter((r) => Number.isFinite(r.ratio) && r.ratio > 0);
  const labelW = 470;
  const plotW = 420;
  const rowH = 18;
  const top = 50;
  const h = top + rows.length * rowH + 40;
  const w = labelW + plotW + 90;
  const maxLog = 3; // 1/8x .. 8x
  const x = (ratio: number, better: string) => {
    const worse = better === 'higher' ? 1 / ratio : ratio;
    const l = Math.max(-maxLog, Math.min(maxLog, Math.log2(worse)));
    return labelW + plotW / 2 + (l / maxLog) * (plotW / 2);
  };
  const mid = labelW + plotW / 2;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="11">`
  );
  parts.push(`<rect width="${w}" height="${h}" fill="white"/>`);
  parts.push(`<text x="10" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`);
  parts.push(
    `<text x="10" y="36" fill="#555">ratio tsshim/runc (log scale); bars to the right: tsshim worse (for MiB/s and calls/s the ratio is inverted for placement)</text>`
  );
  for (const t of [0.125, 0.25, 0.5, 1, 2, 4, 8]) {
    const gx = labelW + plotW / 2 + (Math.log2(t) / maxLog) * (plotW / 2);
    parts.push(
      `<line x1="${gx.toFixed(1)}" y1="${top - 6}" x2="${gx.toFixed(1)}" y2="${h - 34}" stroke="${t === 1 ? '#000' : '#ddd'}"/>`
    );
    parts.push(
      `<text x="${gx.toFixed(1)}" y="${h - 20}" text-anchor="middle" fill="#555">${t < 1 ? `1/${1 / t}` : t}x</text>`
    );
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const bx = x(r.ratio, r.better);
    const worse = bx > mid;
    const color = r.target ? (r.target.met ? '#2a9d4b' : '#d62728') : worse ? '#f4a582' : '#92c5de';
    parts.push(
      `<text x="${labelW - 6}" y="${y + 12}" text-anchor="end">${esc(`${r.suite} · ${r.mode} · ${r.name}`.slice(0, 78))}</text>`
    );
    parts.push(
      `<rect x="${Math.min(bx, mid).toFixed(1)}" y="${y + 3}" width="${Math.max(1, Math.abs(bx - mid)).toFixed(1)}" height="${rowH - 6}" fill="${color}"/>`
    );
    parts.push(
      `<text x="${labelW + plotW + 6}" y="${y + 12}">${r.ratio.toFixed(2)}${r.target ? (r.target.met ? ' ✓' : ' ✗') : ''}</text>`
    );
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
