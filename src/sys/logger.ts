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

/**
 * Debug lines wait this long (or until a line of another level, or ~PIPE_BUF bytes) and go out in
 * one write: at containerd's debug level a shim logs every RPC, ~13 lines per exec, and each write
 * woke containerd's log reader (one syscall and one wake-up per line; the Go shim logs none there).
 * Their `time` is taken when they are made, so containerd's log shows when things happened.
 * They are written at process exit ('exit' event) and before an upgrade's execve; an end that runs
 * no JavaScript (SIGKILL, a fatal signal, V8 out of memory) loses the debug lines of its last 10 ms.
 */
export const DEFERRED_LINE_DELAY_MS = 10;
/** A fifo write of at most PIPE_BUF bytes is all or nothing: a batch never tears a line. */
const MAX_BATCH = MAX_LINE;

/** Sinks holding deferred lines, flushed when the process exits. */
const sinksWithDeferred = new Set<{ flush(): void }>();
let exitFlushInstalled = false;
/** Set once the process exits: a line made after that (an 'exit' listener of later) goes out at once. */
let exiting = false;
function flushAtExit(sink: { flush(): void }): void {
  sinksWithDeferred.add(sink);
  if (exitFlushInstalled) return;
  exitFlushInstalled = true;
  process.on('exit', () => {
    exiting = true;
    flushDeferredLines();
  });
}

/**
 * Writes every deferred line now. The 'exit' event does it by itself; a path that ends the process
 * without one (execve of an in-place upgrade, src/upgrade/exec.ts) calls this first.
 */
export function flushDeferredLines(): void {
  for (const s of [...sinksWithDeferred]) s.flush();
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

  private deferred = '';
  private deferredBytes = 0;
  private deferTimer: NodeJS.Timeout | null = null;

  /** Writes the line now, after any deferred ones (order kept). */
  write(line: string): void {
    if (this.deferredBytes > 0) {
      const bytes = Buffer.byteLength(line);
      if (this.deferredBytes + bytes <= MAX_BATCH) {
        line = this.takeDeferred() + line;
      } else this.flush();
    }
    this.writeNow(line);
  }

  /** Writes the line with the next write, or within DEFERRED_LINE_DELAY_MS (debug lines). */
  defer(line: string): void {
    if (exiting) {
      this.write(line); // no timer fires any more
      return;
    }
    const bytes = Buffer.byteLength(line);
    if (this.deferredBytes + bytes > MAX_BATCH) this.flush();
    this.deferred += line;
    this.deferredBytes += bytes;
    if (!this.deferTimer) {
      this.deferTimer = setTimeout(() => this.flush(), DEFERRED_LINE_DELAY_MS);
      this.deferTimer.unref();
      flushAtExit(this);
    }
  }

  /** Writes the deferred lines now. */
  flush(): void {
    if (this.deferredBytes > 0) this.writeNow(this.takeDeferred());
  }

  /** The fd lines go to now (-1 when none is open). */
  get openFd(): number {
    return this.fd;
  }

  /**
   * Writes what is deferred and closes the fifo; later lines are dropped (no bundle to retarget
   * to). For a daemon that goes back to the spare pool instead of exiting (serve.ts).
   */
  close(): void {
    this.flush();
    this.closeFd();
    this.fd = -1;
    this.bundle = '';
    this.lastFailedRetarget = Infinity;
  }

  private takeDeferred(): string {
    const out = this.deferred;
    this.deferred = '';
    this.deferredBytes = 0;
    if (this.deferTimer) clearTimeout(this.deferTimer);
    this.deferTimer = null;
    sinksWithDeferred.delete(this);
    return out;
  }

  private writeNow(line: string): void {
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

  private closeFd(): void {
    if (this.fd < 0) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }

  private tryOpen(bundle: string): boolean {
    let fd: number;
    try {
      fd = openFifoFd(path.join(bundle, 'log'));
    } catch {
      return false;
    } // ENXIO: nobody reads it
    this.closeFd();
    this.fd = fd;
    this.bundle = bundle;
    return true;
  }
}

/** Where a logger's lines go; `defer` (optional) takes debug lines that may wait for the next write. */
export interface LineSink {
  write(line: string): void;
  defer?(line: string): void;
}

export function createLogger(sink: LineSink | null, minLevel: Level, base: Fields = {}): Logger {
  const log = (level: Level, msg: string, fields?: Fields) => {
    if (!sink || RANK[level] < RANK[minLevel]) return;
    const line = formatLine(level, msg, fields ? { ...base, ...fields } : base);
    if (level === 'debug' && sink.defer) sink.defer(line);
    else sink.write(line);
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
