// Small readers for cgroup pseudo-files. A missing file is a normal answer (null): controllers
// and files come and go with kernel versions, configuration and the cgroup's own life.
// cgroupfs files are generated in the kernel and never block, so they are read synchronously: a
// Stats call reads ~40 of them, and a thread-pool round trip per file cost more than the reads.
import * as fs from 'node:fs';
import { isNotExist } from './errors';
import { ParseError, parseU64, type U64 } from './u64';

/** Reads cgroup files by path: the whole text, or null when the file does not exist. */
export type FileReader = (path: string) => string | null;

/** Reads a file with open/read/close: for one-off reads (OOM events, fixtures). */
export function readOnce(path: string): string | null {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (isNotExist(err)) return null;
    throw err;
  }
}

export async function readOptional(path: string): Promise<string | null> {
  return readOnce(path);
}

/**
 * `dir`/`name`. The directories come normalised (discovery builds them with path.join); a Stats
 * call mostly runs in V8's interpreter, where path.join's normalising cost about as much as the
 * reads themselves (~45% of the parsing time in a profile).
 */
export function at(dir: string, name: string): string {
  return dir.charCodeAt(dir.length - 1) === 0x2f ? dir + name : dir + '/' + name;
}

/** Reads several files of one directory at once; null for each that does not exist. */
export function readAll(dir: string, names: readonly string[], read: FileReader = readOnce): (string | null)[] {
  const out: (string | null)[] = [];
  for (const n of names) out.push(read(at(dir, n)));
  return out;
}

// One buffer for every pread: reads are synchronous, so no two use it at once.
let buffer = Buffer.allocUnsafe(16 * 1024);

/**
 * The whole text of an open file from offset 0 (cgroupfs and /proc seq files regenerate there), in
 * one pread: a seq file fills the buffer until its end, so a short read is the whole text, and a
 * second pread for EOF at offset n would make the kernel generate the file again to skip n bytes. A
 * full buffer is read again from 0 into a bigger one (one generation, never two halves).
 */
function preadAll(fd: number): string {
  for (;;) {
    const n = fs.readSync(fd, buffer, 0, buffer.length, 0);
    if (n < buffer.length) return buffer.toString('utf8', 0, n);
    buffer = Buffer.allocUnsafe(buffer.length * 2);
  }
}

/**
 * Process-wide bound on the descriptors all CgroupFiles keep open. cgroup v1 reads ~26 files per
 * Stats call (~40 with hugetlb and the blkio fallbacks), v2 ~20: 512 keep the files of a dozen or
 * more containers open, the ones most recently asked for (a pod's shim serves a few; a per-node
 * daemon with many containers keeps the recent ones and reopens the others, as before). The shim
 * needs its descriptors for stdio pipes, fifos, sockets and runc calls first: Node raises the soft
 * RLIMIT_NOFILE to the hard one, but a hard limit of 1024 or 4096 is still common.
 */
export const MAX_OPEN_CGROUP_FILES = 512;

let openCount = 0;
/** Sets holding descriptors, least recently used first (a Set iterates in insertion order). */
const inUse = new Set<CgroupFiles>();

/**
 * The cgroup files of one container, kept open between Stats calls and read with pread at offset
 * 0: one syscall per file instead of open, read (twice: the second sees EOF) and close. A cgroup
 * removed under an open file fails its reads (ENODEV): the descriptor is dropped and the path
 * opened anew, so a recreated cgroup is read, and a gone one reads as missing. close() on Delete;
 * beyond MAX_OPEN_CGROUP_FILES the least recently used sets are closed (and reopen on demand).
 */
export class CgroupFiles {
  private readonly fds = new Map<string, number>();
  /**
   * Paths found missing (a controller's optional files: CFQ blkio counters, memsw without swap
   * accounting, ...). A failed open costs an exception (~20-30 us); these are checked with access()
   * instead, which throws nothing, and opened once they exist.
   */
  private readonly missing = new Set<string>();

  /** A FileReader over this set (bound: handed to the collectors). */
  readonly read: FileReader = (path) => {
    let fd = this.fds.get(path);
    if (fd !== undefined) {
      try {
        return preadAll(fd);
      } catch {
        this.forget(path, fd); // the cgroup went away (ENODEV) or the fd is no longer good: reopen
      }
    }
    if (this.missing.has(path)) {
      if (!fs.existsSync(path)) return null;
      this.missing.delete(path);
    }
    try {
      fd = fs.openSync(path, 'r'); // libuv opens close-on-exec
    } catch (err) {
      if (isNotExist(err)) {
        this.missing.add(path);
        return null;
      }
      throw err;
    }
    this.fds.set(path, fd);
    openCount++;
    if (!inUse.has(this)) inUse.add(this);
    return preadAll(fd);
  };

  /** Marks the set as just used and closes the least recently used others beyond the bound. */
  touch(): void {
    if (inUse.delete(this)) inUse.add(this);
    for (const other of inUse) {
      if (openCount <= MAX_OPEN_CGROUP_FILES || other === this) break;
      other.close();
    }
  }

  /** Descriptors this set holds. */
  get size(): number {
    return this.fds.size;
  }

  close(): void {
    this.missing.clear();
    for (const [path, fd] of this.fds) this.forget(path, fd);
    inUse.delete(this);
  }

  private forget(path: string, fd: number): void {
    this.fds.delete(path);
    openCount--;
    try {
      fs.closeSync(fd);
    } catch {
      /* already gone */
    }
  }
}

/** Descriptors held by every CgroupFiles of the process (tests, introspection). */
export function openCgroupFileCount(): number {
  return openCount;
}

export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

/** Splits on runs of whitespace, like Go's strings.Fields. */
export function fields(text: string): string[] {
  return text.split(/\s+/).filter((f) => f !== '');
}

const NO_SPACE = /^\S+$/;
const SMALL_DECIMAL = /^\d{1,15}$/;

/** The error for a line of a keyed file that is not "<key> <value>" (each caller words its own). */
export type KeyedLineError = (file: string, line: string) => Error;

/**
 * Scans "<key> <value>" lines into `into`. The kernel's shape ("<key> <digits>\n", below 2^53)
 * takes a short path: no regex split, no BigInt. Any other non-blank line goes through fields():
 * one of another shape throws badLine's error; its value is read by parseValue, which throws or
 * answers undefined to leave the key out. Both are module-level functions (no closure per call).
 */
export function scanKeyed(
  text: string,
  file: string,
  into: Map<string, U64>,
  badLine: KeyedLineError,
  parseValue: (text: string) => U64 | undefined
): Map<string, U64> {
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end);
    start = end + 1;
    const sp = line.indexOf(' ');
    if (sp > 0) {
      const value = line.slice(sp + 1);
      const key = line.slice(0, sp);
      if (SMALL_DECIMAL.test(value) && NO_SPACE.test(key)) {
        into.set(key, Number(value));
        continue;
      }
    }
    if (line.trim() === '') continue;
    const f = fields(line);
    if (f.length !== 2) throw badLine(file, line);
    const v = parseValue(f[1]);
    if (v !== undefined) into.set(f[0], v);
  }
  return into;
}

function invalidLine(file: string, line: string): Error {
  return new ParseError(`${file}: invalid line ${JSON.stringify(line)}`);
}

/** "key value" lines (memory.stat, cpu.stat, memory.oom_control). Any other shape is an error. */
export function parseKV(text: string, file: string): Map<string, U64> {
  return scanKeyed(text, file, new Map<string, U64>(), invalidLine, parseU64);
}

export async function exists(path: string): Promise<boolean> {
  try {
    fs.accessSync(path);
    return true;
  } catch {
    return false; // absent (or not ours to read): it does not exist for the caller
  }
}
