// Thin, typed wrappers over the libc calls Node does not expose. Every other module reaches the
// kernel only through here. koffi and libc are loaded on first use, so a process that never needs
// a syscall (e.g. the `start` launcher) pays nothing for them.
import { constants as osConstants } from 'node:os';
import type * as Koffi from 'koffi';

/** Linux (x86_64 / aarch64 generic ABI) constants we rely on. */
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;
const PR_SET_CHILD_SUBREAPER = 36;
const PR_GET_CHILD_SUBREAPER = 37;
const WNOHANG = 1;
const WALL = 0x40000000; // __WALL: also children whose exit signal is not SIGCHLD
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_CTRUNC = 0x8;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const TIOCSWINSZ = 0x5414;
const TIOCGWINSZ = 0x5413;
const F_DUPFD_CLOEXEC = 1030;
const F_GETFD = 1;
const F_SETFD = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const FD_CLOEXEC = 1;
const CMSG_HEADER = 16; // cmsg_len (size_t) + cmsg_level (int) + cmsg_type (int)

const errnoNames: Record<number, string> = (() => {
  const out: Record<number, string> = {};
  // First name wins: EAGAIN over its alias EWOULDBLOCK, as Node reports it.
  for (const [name, num] of Object.entries(osConstants.errno)) if (!(num in out)) out[num] = name;
  return out;
})();

/** A failed syscall: `code` is the errno name (e.g. 'EAGAIN'), like Node's own system errors. */
export class SysError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoNames[errno] ?? `E${errno}`;
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${code} (errno ${errno})`);
    this.name = 'SysError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- koffi's functions take and return any C value
type Fn = (...args: any[]) => any;
interface Libc {
  koffi: typeof Koffi;
  prctl: Fn;
  prctlPtr: Fn;
  waitpid: Fn;
  waitid: Fn;
  pipe2: Fn;
  recvmsg: Fn;
  ioctl: Fn;
  eventfd: Fn;
  getsockopt: Fn;
  setsid: Fn;
  mkfifo: Fn;
  close: Fn;
  fcntl: Fn;
  kill: Fn;
  fchown: Fn;
  mount: Fn;
  umount2: Fn;
  madvise: Fn;
  mallocTrim: Fn;
  pidfdOpen: Fn;
  pidfdSendSignal: Fn;
  prlimit: Fn;
  execve: Fn;
  schedSetscheduler: Fn;
  schedGetscheduler: Fn;
  schedGetparam: Fn;
  posixSpawn: Fn;
  faInit: Fn;
  faDestroy: Fn;
  faAddDup2: Fn;
  faAddOpen: Fn;
  faAddChdir: Fn;
  attrInit: Fn;
  attrDestroy: Fn;
  attrSetFlags: Fn;
  attrSetSigMask: Fn;
  attrSetSigDefault: Fn;
  sigemptyset: Fn;
}

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  // Loaded here, not at import time: koffi costs tens of milliseconds to load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy, see above
  const koffi = require('koffi') as typeof Koffi;
  const c = koffi.load('libc.so.6');
  const iovec = koffi.struct('tsshim_iovec', { base: 'void *', len: 'size_t' });
  const msghdr = koffi.struct('tsshim_msghdr', {
    name: 'void *',
    namelen: 'uint32_t',
    iov: koffi.pointer(iovec),
    iovlen: 'size_t',
    control: 'void *',
    controllen: 'size_t',
    flags: 'int',
  });
  // Variadic libc functions (prctl, ioctl, fcntl) are declared with fixed integer/pointer
  // arguments: on the Linux x86_64 and aarch64 ABIs that call is identical.
  libc = {
    koffi,
    prctl: c.func('prctl', 'int', ['int', 'unsigned long', 'unsigned long', 'unsigned long', 'unsigned long']),
    prctlPtr: c.func('prctl', 'int', ['int', 'void *', 'unsigned long', 'unsigned long', 'unsigned long']),
    waitpid: c.func('waitpid', 'int', ['int', 'void *', 'int']),
    waitid: c.func('waitid', 'int', ['int', 'int', 'void *', 'int']),
    pipe2: c.func('pipe2', 'int', ['void *', 'int']),
    recvmsg: c.func('recvmsg', 'long', ['int', koffi.inout(koffi.pointer(msghdr)), 'int']),
    ioctl: c.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
    eventfd: c.func('eventfd', 'int', ['unsigned int', 'int']),
    getsockopt: c.func('getsockopt', 'int', ['int', 'int', 'int', 'void *', 'void *']),
    setsid: c.func('setsid', 'int', []),
    mkfifo: c.func('mkfifo', 'int', ['str', 'uint32_t']),
    close: c.func('close', 'int', ['int']),
    fcntl: c.func('fcntl', 'int', ['int', 'int', 'long']),
    kill: c.func('kill', 'int', ['int', 'int']),
    fchown: c.func('fchown', 'int', ['int', 'uint32_t', 'uint32_t']),
    mount: c.func('mount', 'int', ['str', 'str', 'str', 'unsigned long', 'str']),
    umount2: c.func('umount2', 'int', ['str', 'int']),
    madvise: c.func('madvise', 'int', ['uintptr_t', 'size_t', 'int']),
    mallocTrim: c.func('malloc_trim', 'int', ['size_t']),
    // syscall(2) is variadic; with integer and pointer arguments only, a fixed declaration is the same call.
    pidfdOpen: c.func('syscall', 'long', ['long', 'int', 'unsigned int']),
    pidfdSendSignal: c.func('syscall', 'long', ['long', 'int', 'int', 'void *', 'unsigned int']),
    prlimit: c.func('prlimit', 'int', ['int', 'int', 'void *', 'void *']),
    execve: c.func('execve', 'int', ['const char *', 'const char **', 'const char **']),
    schedSetscheduler: c.func('sched_setscheduler', 'int', ['int', 'int', 'void *']),
    schedGetscheduler: c.func('sched_getscheduler', 'int', ['int']),
    schedGetparam: c.func('sched_getparam', 'int', ['int', 'void *']),
    posixSpawn: c.func('posix_spawn', 'int', [
      koffi.out(koffi.pointer('int')),
      'str',
      'void *',
      'void *',
      koffi.pointer('str'),
      koffi.pointer('str'),
    ]),
    faInit: c.func('posix_spawn_file_actions_init', 'int', ['void *']),
    faDestroy: c.func('posix_spawn_file_actions_destroy', 'int', ['void *']),
    faAddDup2: c.func('posix_spawn_file_actions_adddup2', 'int', ['void *', 'int', 'int']),
    faAddOpen: c.func('posix_spawn_file_actions_addopen', 'int', ['void *', 'int', 'str', 'int', 'uint32_t']),
    faAddChdir: c.func('posix_spawn_file_actions_addchdir_np', 'int', ['void *', 'str']),
    attrInit: c.func('posix_spawnattr_init', 'int', ['void *']),
    attrDestroy: c.func('posix_spawnattr_destroy', 'int', ['void *']),
    attrSetFlags: c.func('posix_spawnattr_setflags', 'int', ['void *', 'short']),
    attrSetSigMask: c.func('posix_spawnattr_setsigmask', 'int', ['void *', 'void *']),
    attrSetSigDefault: c.func('posix_spawnattr_setsigdefault', 'int', ['void *', 'void *']),
    sigemptyset: c.func('sigemptyset', 'int', ['void *']),
  };
  return libc;
}

function lastErrno(): number {
  return lib().koffi.errno();
}

/** Calls a libc function returning -1 on failure; throws SysError with errno, retrying EINTR. */
function check(name: string, call: () => number, detail?: string): number {
  for (;;) {
    const r = call();
    if (r !== -1) return r;
    const e = lastErrno();
    if (e === osConstants.errno.EINTR) continue;
    throw new SysError(name, e, detail);
  }
}

const PR_SET_MM = 35;
const PR_SET_MM_ARG_END = 9;

/**
 * Moves where the kernel ends this process's argv area (what /proc/<pid>/cmdline shows) to `addr`,
 * within what the process maps. Needs CAP_SYS_RESOURCE: false without it (or without libc).
 */
export function setArgvEnd(addr: number): boolean {
  try {
    return lib().prctl(PR_SET_MM, PR_SET_MM_ARG_END, addr, 0, 0) === 0;
  } catch {
    return false;
  }
}

/** Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER). */
export function setChildSubreaper(on = true): void {
  const l = lib();
  check('prctl(PR_SET_CHILD_SUBREAPER)', () => l.prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0));
}

export function isChildSubreaper(): boolean {
  const l = lib();
  const out = Buffer.alloc(4);
  check('prctl(PR_GET_CHILD_SUBREAPER)', () => l.prctlPtr(PR_GET_CHILD_SUBREAPER, out, 0, 0, 0));
  return out.readInt32LE(0) !== 0;
}

/** Out-buffers of the wait calls, reused: the calls are synchronous, and run on every SIGCHLD. */
let waitStatusBuf: Buffer | undefined;
let siginfoBuf: Buffer | undefined;

interface WaitResult {
  pid: number;
  status: number; /* raw wait status */
}

/**
 * waitpid(pid, WNOHANG): the raw status if `pid` has exited and is now reaped; null if it is still
 * running or is not our child (ECHILD, e.g. someone else reaped it). Never pass -1 here.
 */
export function waitpidNoHang(pid: number): WaitResult | null {
  if (!(pid > 0)) throw new RangeError(`waitpidNoHang: refusing pid ${pid}`);
  const l = lib();
  const st = (waitStatusBuf ??= Buffer.alloc(4));
  for (;;) {
    const r = l.waitpid(pid, st, WNOHANG | WALL) as number;
    if (r > 0) return { pid: r, status: st.readInt32LE(0) };
    if (r === 0) return null;
    const e = lastErrno();
    if (e === osConstants.errno.EINTR) continue;
    if (e === osConstants.errno.ECHILD) return null;
    throw new SysError('waitpid', e, `pid ${pid}`);
  }
}

const P_ALL = 0;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const SIGINFO_SIZE = 128;
const SIGINFO_PID_OFFSET = 16; // siginfo_t on 64-bit Linux: signo, errno, code, padding, then si_pid

/**
 * The pid of some exited child, left unreaped (waitid WNOWAIT): 0 when none has exited, -1 when we
 * have no children. Lets the reaper find exits without listing all its children on every SIGCHLD.
 */
export function peekExitedChild(): number {
  const l = lib();
  const info = (siginfoBuf ??= Buffer.alloc(SIGINFO_SIZE));
  info.fill(0); // si_pid stays 0 when no child has exited
  for (;;) {
    const r = l.waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT | WALL) as number;
    if (r === 0) return info.readInt32LE(SIGINFO_PID_OFFSET);
    const e = lastErrno();
    if (e === osConstants.errno.EINTR) continue;
    if (e === osConstants.errno.ECHILD) return -1;
    throw new SysError('waitid', e);
  }
}

/** Raw wait status -> exit code, or 128 + signal number when killed by a signal. */
export function decodeWaitStatus(raw: number): number {
  const termsig = raw & 0x7f;
  if (termsig === 0) return (raw >> 8) & 0xff; // WIFEXITED
  if (termsig !== 0x7f) return 128 + termsig; // WIFSIGNALED
  return (raw >> 8) & 0xff; // stopped (only with WUNTRACED): report the stop signal
}

/** pipe2: returns [readFd, writeFd], close-on-exec by default. */
export function pipe2(opts: { cloexec?: boolean; nonblock?: boolean } = {}): [number, number] {
  const l = lib();
  const fds = Buffer.alloc(8);
  const flags = (opts.cloexec === false ? 0 : O_CLOEXEC) | (opts.nonblock ? O_NONBLOCK : 0);
  check('pipe2', () => l.pipe2(fds, flags));
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

/**
 * Receives one fd passed with SCM_RIGHTS on a (non-blocking) unix socket, close-on-exec.
 * Throws SysError code 'EAGAIN' when nothing has arrived yet (caller retries on a timer),
 * and code 'EOF' when the peer closed without sending an fd. Extra fds in the same
 * message are closed so they do not leak.
 */
export function recvFd(sockFd: number): number {
  const l = lib();
  const data = Buffer.alloc(64);
  const control = Buffer.alloc(256);
  const msg = {
    name: null,
    namelen: 0,
    iov: [{ base: data, len: data.length }],
    iovlen: 1,
    control,
    controllen: control.length,
    flags: 0,
  };
  let n: number;
  for (;;) {
    n = Number(l.recvmsg(sockFd, msg, MSG_CMSG_CLOEXEC));
    if (n >= 0) break;
    const e = lastErrno();
    if (e === osConstants.errno.EINTR) continue;
    throw new SysError('recvmsg', e, `fd ${sockFd}`);
  }
  const fds: number[] = [];
  const ctlLen = Number(msg.controllen);
  let off = 0;
  while (off + CMSG_HEADER <= ctlLen) {
    const len = Number(control.readBigUInt64LE(off));
    if (len < CMSG_HEADER) break;
    const level = control.readInt32LE(off + 8);
    const type = control.readInt32LE(off + 12);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = off + CMSG_HEADER; p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += (len + 7) & ~7;
  }
  if (fds.length === 0) {
    if (n === 0) throw Object.assign(new SysError('recvmsg', 0, 'peer closed without sending an fd'), { code: 'EOF' });
    const err = new SysError(
      'recvmsg',
      0,
      `got ${n} bytes but no fd${msg.flags & MSG_CTRUNC ? ' (control truncated)' : ''}`
    );
    throw Object.assign(err, { code: 'ENOFD' });
  }
  for (const extra of fds.slice(1)) l.close(extra);
  return fds[0];
}

/** ioctl(TIOCSWINSZ) on a terminal fd (pty master). */
export function setWinsize(fd: number, rows: number, cols: number): void {
  const l = lib();
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  check('ioctl(TIOCSWINSZ)', () => l.ioctl(fd, TIOCSWINSZ, ws), `fd ${fd}`);
}

/** ioctl(TIOCGWINSZ): the terminal size, mostly for tests. */
export function getWinsize(fd: number): { rows: number; cols: number } {
  const l = lib();
  const ws = Buffer.alloc(8);
  check('ioctl(TIOCGWINSZ)', () => l.ioctl(fd, TIOCGWINSZ, ws), `fd ${fd}`);
  return { rows: ws.readUInt16LE(0), cols: ws.readUInt16LE(2) };
}

/** eventfd(initval, flags); default flags EFD_CLOEXEC. */
export function eventfd(initval = 0, flags = EFD_CLOEXEC): number {
  const l = lib();
  return check('eventfd', () => l.eventfd(initval >>> 0, flags));
}

/** SO_PEERCRED of a connected unix socket. */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  const l = lib();
  const cred = Buffer.alloc(12);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(12, 0);
  check('getsockopt(SO_PEERCRED)', () => l.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len), `fd ${fd}`);
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
}

export function setsid(): number {
  const l = lib();
  return check('setsid', () => l.setsid());
}

/** mkfifo(3): a FIFO at `file` with `mode` less the umask. */
export function mkfifo(file: string, mode: number): void {
  const l = lib();
  check('mkfifo', () => l.mkfifo(file, mode), file);
}

/**
 * A close-on-exec duplicate of fd (fcntl F_DUPFD_CLOEXEC: same open file description, lowest free
 * number, not below `atLeast`).
 */
export function dupCloexec(fd: number, atLeast = 0): number {
  const l = lib();
  return check('fcntl(F_DUPFD_CLOEXEC)', () => l.fcntl(fd, F_DUPFD_CLOEXEC, atLeast), `fd ${fd}`);
}

/** close(2). EINTR is not retried (the fd is gone on Linux either way). */
export function close(fd: number): void {
  const l = lib();
  if (l.close(fd) === -1) {
    const e = lastErrno();
    if (e !== osConstants.errno.EINTR) throw new SysError('close', e, `fd ${fd}`);
  }
}

/**
 * Replaces this process's program (same pid, children and every fd not close-on-exec: the in-place
 * upgrade of src/upgrade/). Node 20 has no process.execve. Returns only by throwing.
 */
export function execve(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  const envp = Object.entries(env)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  const l = lib();
  l.execve(file, [...argv, null], [...envp, null]);
  throw new SysError('execve', lastErrno(), file);
}

export function setNonBlocking(fd: number, on: boolean): void {
  const l = lib();
  const flags = check('fcntl(F_GETFL)', () => l.fcntl(fd, F_GETFL, 0), `fd ${fd}`);
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check('fcntl(F_SETFL)', () => l.fcntl(fd, F_SETFL, next), `fd ${fd}`);
}

export function isNonBlocking(fd: number): boolean {
  const l = lib();
  return (check('fcntl(F_GETFL)', () => l.fcntl(fd, F_GETFL, 0), `fd ${fd}`) & O_NONBLOCK) !== 0;
}

export function setCloexec(fd: number, on: boolean): void {
  const l = lib();
  const flags = check('fcntl(F_GETFD)', () => l.fcntl(fd, F_GETFD, 0), `fd ${fd}`);
  const next = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  if (next !== flags) check('fcntl(F_SETFD)', () => l.fcntl(fd, F_SETFD, next), `fd ${fd}`);
}

export function isCloexec(fd: number): boolean {
  const l = lib();
  return (check('fcntl(F_GETFD)', () => l.fcntl(fd, F_GETFD, 0), `fd ${fd}`) & FD_CLOEXEC) !== 0;
}

/** fchown(2), e.g. the runc-side end of a stdio pipe to io_uid:io_gid. */
export function fchown(fd: number, uid: number, gid: number): void {
  const l = lib();
  check('fchown', () => l.fchown(fd, uid >>> 0, gid >>> 0), `fd ${fd}`);
}

/** kill(2) with errno reporting (process.kill hides ESRCH vs EPERM behind exceptions too, but this is uniform). */
export function kill(pid: number, signal: number): void {
  const l = lib();
  check('kill', () => l.kill(pid, signal), `pid ${pid} sig ${signal}`);
}

// pidfd_open / pidfd_send_signal (Linux >= 5.3): the numbers are the same on every architecture
// (syscalls added after 5.0 share one table).
const SYS_PIDFD_SEND_SIGNAL = 424;
const SYS_PIDFD_OPEN = 434;

/**
 * A file descriptor that refers to this very process, whatever happens to its pid later
 * (close-on-exec). Throws SysError: ESRCH when no such process, ENOSYS before Linux 5.3.
 */
export function pidfdOpen(pid: number): number {
  const l = lib();
  return Number(check('pidfd_open', () => Number(l.pidfdOpen(SYS_PIDFD_OPEN, pid, 0)), `pid ${pid}`));
}

/**
 * Signals the process a pidfd refers to. ESRCH once that process has exited and was reaped, even if
 * its pid now belongs to another process: the point of holding a pidfd.
 */
export function pidfdSendSignal(pidfd: number, signal: number): void {
  const l = lib();
  check(
    'pidfd_send_signal',
    () => Number(l.pidfdSendSignal(SYS_PIDFD_SEND_SIGNAL, pidfd, signal, null, 0)),
    `pidfd ${pidfd} sig ${signal}`
  );
}

/** kill(pid, 0) probe: true if the process exists (EPERM counts as existing). Zombies exist too. */
export function processExists(pid: number): boolean {
  if (!(pid > 0)) return false;
  const l = lib();
  if (l.kill(pid, 0) === 0) return true;
  return lastErrno() === osConstants.errno.EPERM;
}

/** mount(2). `data` is the filesystem's option string (null for none). */
export function mount(source: string, target: string, fstype: string, flags: number, data: string | null): void {
  const l = lib();
  check(
    'mount',
    () => l.mount(source, target, fstype, flags, data),
    `${JSON.stringify(source)} on ${JSON.stringify(target)} (${fstype})`
  );
}

/** umount2(2). */
export function umount2(target: string, flags = 0): void {
  const l = lib();
  check('umount2', () => l.umount2(target, flags), JSON.stringify(target));
}

const MADV_DONTNEED = 4;

/**
 * madvise(MADV_DONTNEED): drops this process's page-table entries for the range. Only safe on
 * mappings whose pages all still equal the file (see trim.ts); anonymous memory would be zeroed.
 */
export function dropMappedPages(start: bigint, length: number): boolean {
  return lib().madvise(start, length, MADV_DONTNEED) === 0;
}

/** glibc malloc_trim(0): hands free native heap pages back to the kernel. */
export function mallocTrim(): void {
  lib().mallocTrim(0);
}

/** RLIMIT_* resources Linux knows (0..15): CPU, FSIZE, DATA, STACK, CORE, RSS, NPROC, NOFILE, ... RTTIME. */
export const RLIMIT_COUNT = 16;

/** prlimit(pid, resource): [soft, hard] as raw 64-bit values (RLIM_INFINITY is all ones). */
export function getRlimit(pid: number, resource: number): Buffer {
  const l = lib();
  const out = Buffer.alloc(16);
  check('prlimit', () => l.prlimit(pid, resource, null, out), `pid ${pid} resource ${resource}`);
  return out;
}

/** Sets this process's limit of `resource` to a value getRlimit returned. */
export function setRlimit(resource: number, limit: Buffer): void {
  const l = lib();
  check('prlimit', () => l.prlimit(0, resource, limit, null), `resource ${resource}`);
}

/** Scheduling policies (sched(7)); SCHED_RESET_ON_FORK is masked off by schedPolicy. */
export const SCHED_OTHER = 0;
export const SCHED_IDLE = 5;
const SCHED_RESET_ON_FORK = 0x40000000;

/** A thread's policy and static priority (0 for the normal policies). */
export interface SchedPolicy {
  policy: number;
  priority: number;
}

/**
 * sched_getscheduler + sched_getparam of a thread (`tid` 0: the calling thread). Linux applies a
 * policy per thread: a pid names its main thread only.
 */
export function schedPolicy(tid: number): SchedPolicy {
  const l = lib();
  const policy = check('sched_getscheduler', () => l.schedGetscheduler(tid), `tid ${tid}`) & ~SCHED_RESET_ON_FORK;
  const param = Buffer.alloc(4);
  check('sched_getparam', () => l.schedGetparam(tid, param), `tid ${tid}`);
  return { policy, priority: param.readInt32LE(0) };
}

/**
 * sched_setscheduler of one thread. The nice value is kept. Leaving SCHED_IDLE needs CAP_SYS_NICE
 * or an RLIMIT_NICE that allows the thread's nice value (EPERM otherwise).
 */
export function setSchedPolicy(tid: number, p: SchedPolicy): void {
  const l = lib();
  const param = Buffer.alloc(4);
  param.writeInt32LE(p.priority, 0);
  check('sched_setscheduler', () => l.schedSetscheduler(tid, p.policy, param), `tid ${tid} policy ${p.policy}`);
}

// posix_spawn's opaque types, with room to spare: glibc's are 80 (file actions) and 336 (attr) bytes.
const SPAWN_FILE_ACTIONS_BYTES = 256;
const SPAWNATTR_BYTES = 512;
const SIGSET_BYTES = 128;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const O_RDWR = 2;

/** What posixSpawn starts: an absolute path, argv, "K=V" environment, cwd and the child's fds. */
export interface SpawnSpec {
  path: string;
  argv: readonly string[];
  env: readonly string[];
  cwd?: string;
  /** The child's fd i is our fd fds[i] (-1: /dev/null). Our fds may be close-on-exec. */
  fds: readonly number[];
}

/**
 * posix_spawn: glibc starts the child with clone(CLONE_VM | CLONE_VFORK), so this process's page
 * tables are not copied and its heap takes no copy-on-write faults afterwards (child_process forks
 * the whole Node process). Every signal back to its default disposition and an empty signal mask in
 * the child, as libuv does. Returns the pid; throws SysError (e.g. ENOENT) when nothing was started.
 * The child is not libuv's: its exit is reaped by the Reaper.
 */
export function posixSpawn(spec: SpawnSpec): number {
  const l = lib();
  const fa = Buffer.alloc(SPAWN_FILE_ACTIONS_BYTES);
  const attr = Buffer.alloc(SPAWNATTR_BYTES);
  const failed = (what: string, r: number) => {
    if (r !== 0) throw new SysError(what, r, spec.path);
  };
  // dup2(i, i) would keep close-on-exec: move every source above the target range first.
  const moved: number[] = [];
  failed('posix_spawn_file_actions_init', l.faInit(fa));
  failed('posix_spawnattr_init', l.attrInit(attr));
  try {
    spec.fds.forEach((fd, i) => {
      if (fd < 0) {
        failed('posix_spawn_file_actions_addopen', l.faAddOpen(fa, i, '/dev/null', O_RDWR, 0));
        return;
      }
      const high = dupCloexec(fd, spec.fds.length);
      moved.push(high);
      failed('posix_spawn_file_actions_adddup2', l.faAddDup2(fa, high, i));
    });
    if (spec.cwd !== undefined) failed('posix_spawn_file_actions_addchdir_np', l.faAddChdir(fa, spec.cwd));
    // Every signal, glibc's own two (32, 33) too: sigfillset leaves them out and posix_spawn would
    // then start the child with them ignored; libuv's children have all of them at default.
    const all = Buffer.alloc(SIGSET_BYTES, 0xff);
    const none = Buffer.alloc(SIGSET_BYTES);
    l.sigemptyset(none);
    failed('posix_spawnattr_setsigdefault', l.attrSetSigDefault(attr, all));
    failed('posix_spawnattr_setsigmask', l.attrSetSigMask(attr, none));
    failed('posix_spawnattr_setflags', l.attrSetFlags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK));
    const pid = [0];
    failed('posix_spawn', l.posixSpawn(pid, spec.path, fa, attr, [...spec.argv, null], [...spec.env, null]));
    return pid[0];
  } finally {
    for (const fd of moved) l.close(fd);
    l.faDestroy(fa);
    l.attrDestroy(attr);
  }
}
