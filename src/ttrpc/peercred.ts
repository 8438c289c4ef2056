// Peer credentials of an accepted unix socket (SO_PEERCRED), and the default "same user" policy.
import type { Socket } from 'node:net';
import { peerCred } from '../sys/libc';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
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
  try {
    return peerCred(fd);
  } catch (e) {
    throw new Error(`ttrpc: ${(e as Error).message}`);
  }
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
