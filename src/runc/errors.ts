// Errors from runc invocations, with runc's own message pulled from its JSON log (as go-runc does).
import * as fs from 'node:fs';

export interface RuncErrorInit {
  /** Subcommand, e.g. 'create'. */
  command: string;
  /** Full argv after the binary. */
  args: string[];
  /** Exit code (128+signal if killed); -1 when runc never ran or was killed for a deadline. */
  exitCode: number;
  /** Captured stdout+stderr, when runc's output was not handed to the container. */
  output?: string;
  /** runc's stderr alone, when it had a pipe of its own (not for go-runc's combined output). */
  stderr?: string;
  /** Last error message runc wrote to its --log file during this invocation, if any. */
  logMessage?: string;
  /** Why the log could not be read, if it could not. */
  logReadError?: string;
  timedOut?: boolean;
  notFound?: boolean;
  message: string;
}

/**
 * A failed runc run. `message` is Go's error text ("runc did not terminate successfully: exit status
 * N: <output>"); `runcMessage` is what the Go shim puts after its "OCI runtime ... failed: " prefix:
 * runc's last logged error, else the message (with the "unable to retrieve OCI runtime error" note
 * when the log could not be read).
 */
export class RuncError extends Error {
  readonly command: string;
  readonly args: string[];
  readonly exitCode: number;
  readonly output?: string;
  readonly stderr?: string;
  readonly logMessage?: string;
  readonly logReadError?: string;
  readonly timedOut: boolean;
  readonly notFound: boolean;

  constructor(init: RuncErrorInit) {
    super(init.message);
    this.name = 'RuncError';
    this.command = init.command;
    this.args = init.args;
    this.exitCode = init.exitCode;
    this.output = init.output;
    this.stderr = init.stderr;
    this.logMessage = init.logMessage;
    this.logReadError = init.logReadError;
    this.timedOut = init.timedOut ?? false;
    this.notFound = init.notFound ?? false;
  }

  get runcMessage(): string {
    if (this.logMessage) return this.logMessage;
    if (this.logReadError) return `unable to retrieve OCI runtime error (${this.logReadError}): ${this.message}`;
    return this.message;
  }
}

/**
 * Message of the last `"level":"error"` entry in a runc JSON log (trimmed), or undefined.
 * runc writes one JSON object per line; lines that are not JSON are skipped (a torn last line
 * while another runc is still writing must not hide earlier errors).
 */
export function lastLogError(text: string): string | undefined {
  let last: string | undefined;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const o = JSON.parse(t) as { level?: unknown; msg?: unknown };
      if (o.level === 'error' && typeof o.msg === 'string') last = o.msg.trim();
    } catch {
      // partial or foreign line
    }
  }
  return last;
}

/** Size of a file now (0 if missing), to read only what one runc invocation appended. */
export function fileSize(path: string): number {
  try {
    return fs.statSync(path).size;
  } catch {
    return 0; // no log yet: runc's whole log is this invocation's
  }
}

/**
 * Reads a runc log from byte `from` on (the whole file if it shrank) and extracts the last error.
 * Returns { message } or { readError } when the file cannot be read.
 */
export function readLogError(path: string, from: number): { message?: string; readError?: string } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { readError: `open ${path}: ${err.code === 'ENOENT' ? 'no such file or directory' : err.message}` };
  }
  const text = (from > 0 && from <= buf.length ? buf.subarray(from) : buf).toString('utf8');
  return { message: lastLogError(text) };
}
