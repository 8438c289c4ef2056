// Turning a containerd Mount's option words into mount(2) arguments, the way containerd's own
// mount package does: known words become MS_* flags (set or cleared), propagation words become a
// second mount call, everything else is the filesystem's data string. Cases that need more than
// mount(2) (loop devices, FUSE helpers, x- options, data too long for one page) are reported so
// the caller can hand them to mount(8).

export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_SYNCHRONOUS = 0x10;
export const MS_REMOUNT = 0x20;
export const MS_MANDLOCK = 0x40;
export const MS_DIRSYNC = 0x80;
export const MS_NOATIME = 0x400;
export const MS_NODIRATIME = 0x800;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_UNBINDABLE = 0x20000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;
export const MS_RELATIME = 0x200000;
export const MS_STRICTATIME = 0x1000000;

/** [clear instead of set, flag] */
const FLAG_WORDS: Record<string, [boolean, number]> = {
  async: [true, MS_SYNCHRONOUS],
  atime: [true, MS_NOATIME],
  bind: [false, MS_BIND],
  defaults: [false, 0],
  dev: [true, MS_NODEV],
  diratime: [true, MS_NODIRATIME],
  dirsync: [false, MS_DIRSYNC],
  exec: [true, MS_NOEXEC],
  mand: [false, MS_MANDLOCK],
  noatime: [false, MS_NOATIME],
  nodev: [false, MS_NODEV],
  nodiratime: [false, MS_NODIRATIME],
  noexec: [false, MS_NOEXEC],
  nomand: [true, MS_MANDLOCK],
  norelatime: [true, MS_RELATIME],
  nostrictatime: [true, MS_STRICTATIME],
  nosuid: [false, MS_NOSUID],
  rbind: [false, MS_BIND | MS_REC],
  relatime: [false, MS_RELATIME],
  remount: [false, MS_REMOUNT],
  ro: [false, MS_RDONLY],
  rw: [true, MS_RDONLY],
  strictatime: [false, MS_STRICTATIME],
  suid: [true, MS_NOSUID],
  sync: [false, MS_SYNCHRONOUS],
};

const PROPAGATION_WORDS: Record<string, number> = {
  private: MS_PRIVATE,
  rprivate: MS_PRIVATE | MS_REC,
  shared: MS_SHARED,
  rshared: MS_SHARED | MS_REC,
  slave: MS_SLAVE,
  rslave: MS_SLAVE | MS_REC,
  unbindable: MS_UNBINDABLE,
  runbindable: MS_UNBINDABLE | MS_REC,
};

// The kernel copies at most one page of mount data; containerd works around longer overlay
// lowerdir lists with relative paths, mount(8) with the new mount API. Leave those to mount(8).
const MAX_DATA = 4096 - 512;

export interface MountCall {
  flags: number;
  data: string;
  /** Propagation change applied with a second call (0: none). */
  propagation: number;
  /** A bind mount asked to be read-only (or nosuid, ...): needs MS_REMOUNT|MS_BIND afterwards. */
  bindRemount: boolean;
}

/** The mount(2) call for a mount, or null when it needs mount(8). */
export function mountCall(type: string, options: readonly string[]): MountCall | null {
  if (type.includes('.') || type.startsWith('fuse')) return null; // fuse.sshfs and other helpers
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    if (o === 'loop' || o.startsWith('x-')) return null;
    const f = FLAG_WORDS[o];
    if (f) flags = f[0] ? flags & ~f[1] : flags | f[1];
    else if (o in PROPAGATION_WORDS) propagation |= PROPAGATION_WORDS[o];
    else data.push(o);
  }
  const joined = data.join(',');
  if (joined.length > MAX_DATA) return null;
  const bindRemount = (flags & MS_BIND) !== 0 && (flags & ~(MS_BIND | MS_REC | MS_REMOUNT)) !== 0;
  return { flags, data: joined, propagation, bindRemount };
}
