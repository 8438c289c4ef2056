// Structured logs in logrus text format, written to a served bundle's `log` fifo so they show up
// in containerd's own log. Writes are non-blocking and best effort: while containerd is away the fifo
// has no reader (EPIPE) or is full (EAGAIN) and the line is dropped rather than stalling the shim.
import * as fs from 'node:fs';
import * as path from 'node:path';

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
  const s = v instanceof Error ? v.message : typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
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
    try {
      fs.writeSync(this.fd, line);
    } catch {
      /* no reader or full: drop the line */
    }
  }
}

function openFifoFd(file: string): number {
  return fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | O_CLOEXEC);
}

/** Opens the bundle's log fifo without blocking; null when it does not exist (shim run by hand). */
export function openLogFifo(file: string): FdSink | null {
  try {
    return new FdSink(openFifoFd(file));
  } catch {
    return null; // as documented: no fifo to log to (the shim was run by hand)
  }
}

/** After no live bundle's fifo could be opened, wait this long before trying again (not per line). */
const RETARGET_BACKOFF_MS = 1000;

/**
 * The `log` fifo of a bundle this shim serves. containerd reads each task's fifo only while that
 * task exists, so a grouped or per-node shim that started in a container's bundle loses its reader
 * when that container is deleted: the next write fails with EPIPE, and the sink moves to the log
 * fifo of a bundle that is still served (the line that failed is written there).
 */
export class BundleLogSink {
  private fd = -1;
  private bundle = '';
  private lastFailedRetarget = -Infinity;

  /** liveBundles: the bundles of the containers served now, in any order. */
  constructor(
    firstBundle: string,
    private readonly liveBundles: () => string[],
    private readonly now = Date.now
  ) {
    this.tryOpen(firstBundle);
  }

  /** The bundle whose fifo receives the lines now ('' when none). */
  get current(): string {
    return this.bundle;
  }

  write(line: string): void {
    if (this.fd >= 0) {
      try {
        fs.writeSync(this.fd, line);
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException | null)?.code;
        if (code !== 'EPIPE' && code !== 'EBADF') return; // full (EAGAIN): drop the line
      }
    }
    if (this.retarget()) {
      try {
        fs.writeSync(this.fd, line);
      } catch {
        /* the new reader went away too: drop */
      }
    }
  }

  private retarget(): boolean {
    if (this.now() - this.lastFailedRetarget < RETARGET_BACKOFF_MS) return false;
    let bundles: string[] = [];
    try {
      bundles = this.liveBundles();
    } catch {
      /* the service is not there yet */
    }
    // A deleted container is no longer listed (and its fifo is gone with its bundle).
    for (const b of bundles) if (this.tryOpen(b)) return true;
    this.lastFailedRetarget = this.now();
    return false;
  }

  private tryOpen(bundle: string): boolean {
    let fd: number;
    try {
      fd = openFifoFd(path.join(bundle, 'log'));
    } catch {
      return false;
    } // ENXIO: nobody reads it
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* already closed */
      }
    }
    this.fd = fd;
    this.bundle = bundle;
    return true;
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
