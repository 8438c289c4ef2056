// Small readers for cgroup pseudo-files. A missing file is a normal answer (null): controllers
// and files come and go with kernel versions, configuration and the cgroup's own life.
// cgroupfs files are generated in the kernel and never block, so they are read synchronously: a
// Stats call reads ~40 of them, and a thread-pool round trip per file cost more than the reads.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { isNotExist } from './errors';
import { ParseError, parseU64, type U64 } from './u64';

export async function readOptional(path: string): Promise<string | null> {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (isNotExist(err)) return null;
    throw err;
  }
}

/** Reads several files of one directory at once; null for each that does not exist. */
export function readAll(dir: string, names: readonly string[]): Promise<(string | null)[]> {
  return Promise.all(names.map((n) => readOptional(join(dir, n))));
}

export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

/** Splits on runs of whitespace, like Go's strings.Fields. */
export function fields(text: string): string[] {
  return text.split(/\s+/).filter((f) => f !== '');
}

/** "key value" lines (memory.stat, cpu.stat, memory.oom_control). Any other shape is an error. */
export function parseKV(text: string, file: string): Map<string, U64> {
  const out = new Map<string, U64>();
  for (const line of lines(text)) {
    const f = fields(line);
    if (f.length !== 2) throw new ParseError(`${file}: invalid line ${JSON.stringify(line)}`);
    out.set(f[0], parseU64(f[1]));
  }
  return out;
}

export async function exists(path: string): Promise<boolean> {
  try {
    fs.accessSync(path);
    return true;
  } catch {
    return false;
  }
}
