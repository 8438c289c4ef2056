// The benchmark's result rows: one measure, runc's and tsshim's samples, their ratio, and the
// issue's target for that measure when it has one.
import { ratio, sample, type Sample } from './stats';

export type Better = 'lower' | 'higher';

export interface Target {
  /** What the issue asks, in words. */
  text: string;
  /** Compare `ratio` (default) or tsshim's absolute median. */
  on: 'ratio' | 'tsshim';
  op: '<=' | '>=';
  value: number;
}

export interface Row {
  suite: string;
  name: string;
  mode: string;
  unit: string;
  better: Better;
  runc: Sample | null;
  tsshim: Sample | null;
  ratio: number;
  target?: Target & { met: boolean | null };
  note?: string;
}

export interface RowInput {
  suite: string;
  name: string;
  mode?: string;
  unit: string;
  better?: Better;
  runc?: number[] | null;
  tsshim?: number[] | null;
  target?: Target;
  note?: string;
}

export function targetMet(t: Target, r: number, tsshim: Sample | null): boolean | null {
  const v = t.on === 'ratio' ? r : (tsshim?.median ?? NaN);
  if (!Number.isFinite(v)) return null;
  return t.op === '<=' ? v <= t.value : v >= t.value;
}

export class Results {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];
  readonly extra: Record<string, unknown> = {};

  add(input: RowInput): Row {
    const runc = input.runc ? sample(input.runc) : null;
    const tsshim = input.tsshim ? sample(input.tsshim) : null;
    const r = ratio(tsshim, runc);
    const row: Row = {
      suite: input.suite,
      name: input.name,
      mode: input.mode ?? 'single',
      unit: input.unit,
      better: input.better ?? 'lower',
      runc,
      tsshim,
      ratio: r,
      note: input.note,
    };
    if (input.target) row.target = { ...input.target, met: targetMet(input.target, r, tsshim) };
    this.rows.push(row);
    return row;
  }

  note(text: string): void {
    this.notes.push(text);
  }
}
