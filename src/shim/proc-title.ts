// The daemon's /proc/<pid>/cmdline, NUL-separated like every Go shim's:
//   containerd-shim-tsshim-v2\0-namespace\0<ns>\0-id\0<id>\0-address\0<addr>\0
// Tools split it on NUL to find -namespace, -id and -address. Node's process.title cannot do that:
// libuv copies the title with strlen (an embedded NUL ends it), and a title that fills the argv
// area up to its last byte switches the kernel to setproctitle mode, which stops at the first NUL.
// So the bytes are written into our own argv area (/proc/self/stat arg_start..arg_end) through
// /proc/self/mem. With CAP_SYS_RESOURCE (root has it, unless a container's bounding set dropped it)
// the area the kernel shows then ends where the arguments do (prctl PR_SET_MM_ARG_END); without it,
// it ends in a run of NULs: readers see empty trailing arguments, as after any shorter
// setproctitle. That run is the room for a daemon's title (~300 bytes), and the sh reads a cmdline
// a byte per system call (dash's `read`): ~0.5 ms more per look at a shim or spare, two of them per
// warm start. A title of one argument (a spare's) needs no capability: with the area's last byte
// not NUL, the kernel shows it up to its first NUL (setproctitle mode), which ends the title.
import * as fs from 'node:fs';
import { setArgvEnd } from '../sys/libc';

/** A pair of address fields of /proc/<pid>/stat (48/49: argv, 50/51: environment). */
function statArea(startField: number, pid: number | 'self' = 'self'): { start: number; end: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) may hold spaces and parentheses: count from the last ')', which ends field 2.
  const fields = stat
    .slice(stat.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  return { start: Number(fields[startField - 3]), end: Number(fields[startField + 1 - 3]) };
}

/** arg_start and arg_end (fields 48 and 49 of /proc/<pid>/stat). */
export function argvArea(pid: number | 'self' = 'self'): { start: number; end: number } {
  return statArea(48, pid);
}

/** Where our argv area ended before we first moved its end: the room every later title has. */
let originalArgvEnd = 0;

/**
 * Overwrites one of our own argv/environment areas (its first stat field given) with `bytes`,
 * zero-filling the rest, through /proc/self/mem. False, changing nothing, when it does not fit.
 * The argv area then ends with `bytes` where the kernel lets us say so (setArgvEnd).
 */
export function overwriteOwnArea(startField: 48 | 50, bytes: Buffer): boolean {
  const area = statArea(startField);
  const { start } = area;
  let { end } = area;
  if (startField === 48) end = originalArgvEnd ||= end;
  if (!start || !(end > start) || bytes.length > end - start) return false;
  const fill = Buffer.alloc(end - start); // zero-filled: for argv the last byte stays NUL (no setproctitle mode)
  bytes.copy(fill);
  // argv: the area ends with the NUL that ends the last argument, or else a lone argument is shown
  // in setproctitle mode (see the top of this file).
  const args = startField === 48 && bytes.length > 0 && bytes[bytes.length - 1] === 0;
  if (args && !setArgvEnd(start + bytes.length) && bytes.indexOf(0) === bytes.length - 1 && bytes.length < fill.length)
    fill[fill.length - 1] = 0x20;
  const fd = fs.openSync('/proc/self/mem', 'r+');
  try {
    fs.writeSync(fd, fill, 0, fill.length, start);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/** The arguments of a /proc/<pid>/cmdline, split on NUL, trailing empty ones dropped. */
export function splitCmdline(raw: Buffer | string): string[] {
  const args = raw.toString().split('\0');
  while (args.length && args[args.length - 1] === '') args.pop();
  return args;
}

/**
 * Rewrites this process's argv as seen in /proc/self/cmdline. Returns false (changing nothing)
 * when the arguments do not fit the original argv area or /proc/self/mem is not writable.
 */
export function setProcessArgv(args: readonly string[]): boolean {
  try {
    return overwriteOwnArea(48, Buffer.from(args.join('\0') + '\0'));
  } catch {
    return false; // as documented: the title is cosmetic, the caller goes on with the old one
  }
}

/**
 * A title of one argument (a spare's: the sh compares it whole). Not process.title once the area
 * was moved: libuv writes within the area it found at boot, and the kernel would cut it short.
 */
export function setProcessTitle(title: string): void {
  if (!setProcessArgv([title])) process.title = title;
}

/** The daemon's argv as the Go shim has it; a joined process.title when it cannot be written. */
export function setShimArgv(flags: { namespace: string; id: string; address: string; debug?: boolean }): void {
  const args = ['containerd-shim-tsshim-v2', '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  if (!setProcessArgv(args)) process.title = args.join(' ');
}
