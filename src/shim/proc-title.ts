// The daemon's /proc/<pid>/cmdline, NUL-separated like every Go shim's:
//   containerd-shim-tsshim-v2\0-namespace\0<ns>\0-id\0<id>\0-address\0<addr>\0
// Tools split it on NUL to find -namespace, -id and -address. Node's process.title cannot do that:
// libuv copies the title with strlen (an embedded NUL ends it), and a title that fills the argv
// area up to its last byte switches the kernel to setproctitle mode, which stops at the first NUL.
// So the bytes are written into our own argv area (/proc/self/stat arg_start..arg_end) through
// /proc/self/mem. The area cannot shrink without CAP_SYS_RESOURCE (prctl PR_SET_MM_ARG_END), so it
// ends in a run of NULs: readers see empty trailing arguments, as after any shorter setproctitle.
import * as fs from 'node:fs';

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

/**
 * Overwrites one of our own argv/environment areas (its first stat field given) with `bytes`,
 * zero-filling the rest, through /proc/self/mem. False, changing nothing, when it does not fit.
 */
export function overwriteOwnArea(startField: 48 | 50, bytes: Buffer): boolean {
  const { start, end } = statArea(startField);
  if (!start || !(end > start) || bytes.length > end - start) return false;
  const area = Buffer.alloc(end - start); // zero-filled: for argv the last byte stays NUL (no setproctitle mode)
  bytes.copy(area);
  const fd = fs.openSync('/proc/self/mem', 'r+');
  try {
    fs.writeSync(fd, area, 0, area.length, start);
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

/** The daemon's argv as the Go shim has it; a joined process.title when it cannot be written. */
export function setShimArgv(flags: { namespace: string; id: string; address: string; debug?: boolean }): void {
  const args = ['containerd-shim-tsshim-v2', '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  if (!setProcessArgv(args)) process.title = args.join(' ');
}
