// Reads a containerd log (logrus text lines, shims' lines included) between two byte offsets and
// turns it into per-container phase timings for `ctr run --rm`.
import * as fs from 'node:fs';

export interface LogLine {
  timeMs: number;
  level: string;
  msg: string;
  fields: Record<string, string>;
}

const FIELD = /([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S+)/g;

/** logrus time: RFC 3339 with 0..9 fractional digits; back to ms since epoch with the fraction kept. */
export function parseLogTime(s: string): number {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return NaN;
  const base = Date.parse(m[1] + m[3]);
  return base + (m[2] ? Number(`0.${m[2]}`) * 1000 : 0);
}

export function parseLine(line: string): LogLine | null {
  const start = line.indexOf('time="');
  if (start < 0) return null;
  const fields: Record<string, string> = {};
  FIELD.lastIndex = 0;
  const text = line.slice(start);
  for (let m = FIELD.exec(text); m; m = FIELD.exec(text)) {
    let v = m[2];
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v);
      } catch {
        v = v.slice(1, -1);
      }
    }
    if (!(m[1] in fields)) fields[m[1]] = v;
  }
  const timeMs = parseLogTime(fields.time ?? '');
  if (!Number.isFinite(timeMs)) return null;
  return { timeMs, level: fields.level ?? '', msg: fields.msg ?? '', fields };
}

export function logSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Lines written to `file` in [from, to) bytes. */
export function readLines(file: string, from: number, to: number): LogLine[] {
  if (to <= from) return [];
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(to - from);
    fs.readSync(fd, buf, 0, buf.length, from);
    return buf
      .toString('utf8')
      .split('\n')
      .map(parseLine)
      .filter((l): l is LogLine => l !== null);
  } finally {
    fs.closeSync(fd);
  }
}

export interface RunPhases {
  /** ctr start-up and container create: ctr spawned -> /containers/create. Same work for both runtimes. */
  ctrHead: number;
  /** Shim start-up: /containers/create -> shim serving (runc "starting signal loop", tsshim "shim started"); null when an existing shim was reused. */
  start: number | null;
  /** Shim serving -> /tasks/create; null when the shim was reused. */
  create: number | null;
  /** /containers/create -> /tasks/create, always available. */
  startAndCreate: number;
  start_: number; // /tasks/create -> /tasks/start
  exitSeen: number; // /tasks/start -> /tasks/exit
  delete: number; // /tasks/exit -> /tasks/delete
  /** /tasks/delete -> /containers/delete: Shutdown, shim exit, the `delete` binary run, bundle removal. */
  shutdown: number;
  /** /containers/delete -> ctr exited. */
  ctrTail: number;
  /** tsshim only: the daemon's own rpc durations (ms) by method, summed per method. */
  rpc: Record<string, number>;
}

function firstTime(lines: LogLine[], pred: (l: LogLine) => boolean): number | null {
  const l = lines.find(pred);
  return l ? l.timeMs : null;
}

const topic = (t: string) => (l: LogLine) =>
  l.fields.topic === t && (l.msg === 'event published' || l.msg === 'event forwarded');

/** Phases of one `ctr run --rm` from the log lines it caused; null if a marker is missing. */
export function runPhases(lines: LogLine[], spawnedAt: number, exitedAt: number): RunPhases | null {
  const cc = firstTime(lines, topic('/containers/create'));
  const tc = firstTime(lines, topic('/tasks/create'));
  const ts = firstTime(lines, topic('/tasks/start'));
  const te = firstTime(lines, topic('/tasks/exit'));
  const td = firstTime(lines, topic('/tasks/delete'));
  const cd = firstTime(lines, topic('/containers/delete'));
  if (cc === null || tc === null || ts === null || te === null || td === null || cd === null) return null;
  const ready = firstTime(
    lines,
    (l) =>
      (l.msg === 'starting signal loop' && l.fields.runtime === 'io.containerd.runc.v2') ||
      (l.msg === 'shim started' && l.fields.runtime === 'io.containerd.tsshim.v2')
  );
  const rpc: Record<string, number> = {};
  for (const l of lines) {
    if (l.msg !== 'rpc' || !l.fields.method) continue;
    rpc[l.fields.method] = (rpc[l.fields.method] ?? 0) + Number(l.fields.duration_ms);
  }
  return {
    ctrHead: cc - spawnedAt,
    start: ready === null ? null : ready - cc,
    create: ready === null ? null : tc - ready,
    startAndCreate: tc - cc,
    start_: ts - tc,
    exitSeen: te - ts,
    delete: td - te,
    shutdown: cd - td,
    ctrTail: exitedAt - cd,
    rpc,
  };
}
