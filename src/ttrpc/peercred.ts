// Peer credentials of an accepted unix socket (SO_PEERCRED), and the default "same user" policy.
// Uses koffi directly (loaded on first use) so the library does not depend on the shim's sys module.
import type { Socket } from 'node:net';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, len: Buffer) => number;
let getsockopt: GetSockOpt | null = null;

function loadGetsockopt(): GetSockOpt {
  if (!getsockopt) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- koffi loads on first use (tens of ms)
    const koffi = require('koffi');
    const libc = koffi.load('libc.so.6');
    getsockopt = libc.func('int getsockopt(int, int, int, void *, void *)') as GetSockOpt;
  }
  return getsockopt;
}

/** The fd behind a net.Socket (libuv pipe handle); undefined for non-unix or closed sockets. */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** Credentials of the process that connected `socket` (as of its connect()). Throws if unavailable. */
export function peerCredOf(socket: Socket): PeerCred {
  const fd = socketFd(socket);
  if (fd === undefined) throw new Error('ttrpc: socket has no file descriptor (not a unix socket?)');
  const value = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED_SIZE); // socklen_t in host byte order (little-endian on x86_64/aarch64)
  const rc = loadGetsockopt()(fd, SOL_SOCKET, SO_PEERCRED, value, len);
  if (rc !== 0) throw new Error(`ttrpc: getsockopt(SO_PEERCRED) failed on fd ${fd}`);
  return { pid: value.readInt32LE(0), uid: value.readUInt32LE(4), gid: value.readUInt32LE(8) };
}

/**
 * Go's UnixSocketRequireSameUser: the peer's uid AND gid must equal our effective uid and gid.
 * (containerd's own ttrpc server applies the same rule to shims.)
 */
export function isSameUser(cred: PeerCred): boolean {
  const euid = process.geteuid ? process.geteuid() : -1;
  const egid = process.getegid ? process.getegid() : -1;
  return cred.uid === euid && cred.gid === egid;
}
