// Structured logs in logrus text format, written to the bundle's `log` fifo so they show up in
// containerd's own log. Writes are non-blocking and best effort: while containerd is away the fifo
// has no reader (EPIPE) or is full (EAGAIN) and the line is dropped rather than stalling the shim.
import * as fs from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
// PIPE_BUF: a write of at most this many bytes to a fifo is atomic, so lines never interleave.
const MAX_LINE = 4096;
const O_CLOEXEC = 0o2000000; // not exported by fs.constants

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  with(fields: Fields): Logger;
  enabled(level: Level): boolean;
}

function quote(v: unknown): string {
  const s = v instanceof Error ? v.message : typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return /^[A-Za-z0-9_.:/@+-]+$/.test(s) ? s : JSON.stringify(s);
}

export function formatLine(level: Level, msg: string, fields: Fields, now = new Date()): string {
  let line = `time="${now.toISOString()}" level=${level === 'warn' ? 'warning' : level} msg=${JSON.stringify(msg)}`;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${quote(v)}`;
  line += '\n';
  if (Buffer.byteLength(line) > MAX_LINE) line = line.slice(0, MAX_LINE - 5) + '...\n';
  return line;
}

export class FdSink {
  constructor(private fd: number) {}
  write(line: string): void {
    if (this.fd < 0) return;
    try { fs.writeSync(this.fd, line); } catch { /* no reader or full: drop the line */ }
  }
}

/** Opens the bundle's log fifo without blocking; null when it does not exist (shim run by hand). */
export function openLogFifo(file: string): FdSink | null {
  try {
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | O_CLOEXEC);
    return new FdSink(fd);
  } catch {
    return null;
  }
}

export function createLogger(sink: { write(line: string): void } | null, minLevel: Level, base: Fields = {}): Logger {
  const log = (level: Level, msg: string, fields?: Fields) => {
    if (!sink || RANK[level] < RANK[minLevel]) return;
    sink.write(formatLine(level, msg, fields ? { ...base, ...fields } : base));
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    with: (fields) => createLogger(sink, minLevel, { ...base, ...fields }),
    enabled: (level) => !!sink && RANK[level] >= RANK[minLevel],
  };
}

export const nullLogger: Logger = createLogger(null, 'error');
