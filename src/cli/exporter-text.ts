// Prometheus text exposition (format 0.0.4) built from samples added in any order: each family's
// HELP and TYPE once, its samples together, a repeated series (same name and labels) kept once.
// Prometheus drops a whole scrape on a duplicate series or a family split in two, so the writer
// makes both impossible rather than trusting its callers.

export type MetricType = 'counter' | 'gauge' | 'histogram';
export type Labels = Record<string, string>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** `{a="1",b="2"}` with label names sorted (so equal label sets give equal keys); empty labels dropped. */
export function formatLabels(labels: Labels): string {
  const names = Object.keys(labels)
    .filter((k) => labels[k] !== '')
    .sort();
  for (const n of names)
    if (!LABEL_NAME.test(n) || n.startsWith('__')) throw new Error(`invalid label name ${JSON.stringify(n)}`);
  return names.length ? `{${names.map((n) => `${n}="${escapeLabelValue(labels[n])}"`).join(',')}}` : '';
}

interface Family {
  type: MetricType;
  help: string;
  series: Map<string, string>;
}

export class Exposition {
  private families = new Map<string, Family>();

  /** Declares a family; declaring it again with another type is a programming error. */
  family(name: string, type: MetricType, help: string): this {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    const f = this.families.get(name);
    if (f && f.type !== type) throw new Error(`metric ${name} declared as ${f.type} and ${type}`);
    if (!f) this.families.set(name, { type, help, series: new Map() });
    return this;
  }

  /**
   * One sample of a declared family (`name` may carry a histogram's _bucket/_sum/_count suffix).
   * A second sample of the same series is ignored: the first one wins.
   */
  sample(family: string, value: number, labels: Labels = {}, name = family): this {
    const f = this.families.get(family);
    if (!f) throw new Error(`sample of undeclared family ${family}`);
    if (name !== family && !(f.type === 'histogram' && HISTOGRAM_SUFFIXES.some((s) => name === family + s))) {
      throw new Error(`sample ${name} does not belong to family ${family}`);
    }
    const key = name + formatLabels(labels);
    if (!f.series.has(key)) f.series.set(key, `${key} ${formatValue(value)}`);
    return this;
  }

  /** Families sorted by name; a family without samples is left out. */
  text(): string {
    const out: string[] = [];
    for (const name of [...this.families.keys()].sort()) {
      const f = this.families.get(name)!;
      if (f.series.size === 0) continue;
      out.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} ${f.type}`, ...f.series.values());
    }
    return out.length ? out.join('\n') + '\n' : '';
  }
}
