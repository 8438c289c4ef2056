// JSON of OCI specs with a bounded cost. JSON.parse is synchronous: 4 MiB of nested arrays took ~3 s
// here, blocking every other call of the shim, and the result's depth later overflowed the stack
// (JSON.stringify when writing process.json). So before parsing we check the size, then scan once
// (linear, string-aware) for the nesting depth and the number of values, and refuse what exceeds them.
import * as fs from 'node:fs';
import { invalidArgument } from './errors';

export interface JsonLimits {
  maxBytes: number;
  /** Deepest nesting of objects/arrays; an OCI spec needs fewer than 10 levels. */
  maxDepth: number;
  /** Most values (counted as '{', '[' and ','); bounds JSON.parse's time for a given size. */
  maxValues: number;
}

/** An exec's process spec (args, env, ...): execve takes at most a few MiB of args and env anyway. */
export const PROCESS_SPEC_LIMITS: JsonLimits = { maxBytes: 1 << 20, maxDepth: 64, maxValues: 65_536 };
/** A bundle's config.json, written by containerd (mounts, annotations, seccomp profile...). */
export const BUNDLE_SPEC_LIMITS: JsonLimits = { maxBytes: 4 << 20, maxDepth: 64, maxValues: 262_144 };

const QUOTE = 0x22,
  BACKSLASH = 0x5c,
  OPEN_BRACE = 0x7b,
  CLOSE_BRACE = 0x7d,
  OPEN_BRACKET = 0x5b,
  CLOSE_BRACKET = 0x5d,
  COMMA = 0x2c;

export interface JsonShape {
  depth: number;
  values: number;
}

/**
 * Deepest nesting and value count of a JSON text, without parsing it. Stops as soon as a limit is
 * passed (the figures then exceed it). Brackets inside strings do not count; validity is JSON.parse's job.
 */
export function jsonShape(
  text: string,
  limits: Pick<JsonLimits, 'maxDepth' | 'maxValues'> = { maxDepth: Infinity, maxValues: Infinity }
): JsonShape {
  let depth = 0,
    deepest = 0,
    values = 0,
    inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === BACKSLASH) i++;
      else if (ch === QUOTE) inString = false;
      continue;
    }
    switch (ch) {
      case QUOTE:
        inString = true;
        break;
      case OPEN_BRACE:
      case OPEN_BRACKET:
        values++;
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limits.maxDepth) return { depth: deepest, values };
        }
        break;
      case CLOSE_BRACE:
      case CLOSE_BRACKET:
        depth--;
        break;
      case COMMA:
        if (++values > limits.maxValues) return { depth: deepest, values };
        break;
    }
  }
  return { depth: deepest, values };
}

/** Parses `data` as JSON within `limits`; INVALID_ARGUMENT naming `what` and the limit otherwise. */
export function parseSpecJson<T = unknown>(data: Uint8Array | string, what: string, limits: JsonLimits): T {
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
  if (size > limits.maxBytes) throw invalidArgument(`${what} is too large: ${size} bytes (limit ${limits.maxBytes})`);
  const text =
    typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8');
  const shape = jsonShape(text, limits);
  if (shape.depth > limits.maxDepth)
    throw invalidArgument(`${what} is nested too deeply: more than ${limits.maxDepth} levels`);
  if (shape.values > limits.maxValues)
    throw invalidArgument(`${what} has too many values: more than ${limits.maxValues}`);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw invalidArgument(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Reads and parses a JSON file within `limits`: stat first, so a huge file is never read. */
export function readSpecFile<T = unknown>(file: string, what: string, limits: JsonLimits): T {
  const st = fs.statSync(file);
  if (!st.isFile()) throw invalidArgument(`${what} ${file} is not a regular file`);
  if (st.size > limits.maxBytes)
    throw invalidArgument(`${what} ${file} is too large: ${st.size} bytes (limit ${limits.maxBytes})`);
  return parseSpecJson<T>(readBounded(file, limits.maxBytes, what, st.size), `${what} ${file}`, limits);
}

/**
 * At most `max` bytes of `file`; throws when it holds more (it grew after stat, or stat reports 0 as
 * for /proc files). `sizeHint` (the stat size) sizes the first buffer. O_NONBLOCK: a FIFO never blocks.
 */
export function readBounded(file: string, max: number, what: string, sizeHint = 64 * 1024): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    let buf = Buffer.allocUnsafe(Math.min(max, Math.max(sizeHint, 4096)) + 1);
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        if (len > max) throw invalidArgument(`${what} ${file} is too large: more than ${max} bytes`);
        const bigger = Buffer.allocUnsafe(Math.min(max + 1, buf.length * 2));
        buf.copy(bigger, 0, 0, len);
        buf = bigger;
      }
      const n = fs.readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
    }
    if (len > max) throw invalidArgument(`${what} ${file} is too large: more than ${max} bytes`);
    return buf.subarray(0, len);
  } finally {
    fs.closeSync(fd);
  }
}
