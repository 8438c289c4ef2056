// `start`: find or launch the long-lived shim for this container's group and print its address.
// containerd reads stdout+stderr combined until both close, so nothing but the address is printed
// and the daemon never inherits those pipes. The socket listens before the address is printed.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import type { ShimFlags } from './flags';
import { groupKey, PER_NODE_GROUP, readAnnotations, socketPath, toAddress, writeFileAtomic } from './address';
import { bundleFile } from '../task/bundle-files';
import type { ShimConfig } from './config';

export { PER_NODE_GROUP };

export interface StartOptions {
  perNode: boolean;
  shimCgroup: string;
}

function listen(socket: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(socket, () => {
      srv.removeListener('error', reject);
      resolve(srv);
    });
  });
}

/**
 * Whether a shim serves `socket`: false only when nothing listens there (refused, or no such file).
 * A connect that does not complete in time counts as served: on a loaded machine the timer can
 * fire before the completed connect is seen, and taking a live shim's socket for stale would start
 * a second shim for its group.
 */
function served(socket: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT'));
  });
}

const inode = (file: string): number | null => {
  try {
    return fs.lstatSync(file).ino;
  } catch {
    return null;
  }
};

/**
 * A claim lock older than this (its mtime: an empty directory keeps the time it was made) was left
 * by a start that died holding it; a claim takes milliseconds.
 */
const CLAIM_LOCK_ABANDONED_MS = 10_000;
const CLAIM_LOCK_RETRY_MS = 10;

/**
 * Runs `claim` while holding the claim lock of `socket` (a directory next to it: mkdir is atomic,
 * and a start that dies holding it leaves it old enough to be taken over). Serialising the starts
 * of one group is what makes the socket trustworthy: bind and listen are two system calls, and a
 * start looking between them saw a refusing socket it took for stale, removed, and bound anew (two
 * shims for one group: CI of bbe942e on 1.6.20 at load ~20, and the unit test in CI of 46a4897).
 */
async function withClaimLock<T>(socket: string, claim: () => Promise<T>): Promise<T> {
  const lock = path.join(path.dirname(socket), `.claim-${path.basename(socket)}`);
  for (;;) {
    try {
      fs.mkdirSync(lock, { mode: 0o700 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    try {
      if (Date.now() - fs.statSync(lock).mtimeMs > CLAIM_LOCK_ABANDONED_MS) fs.rmdirSync(lock);
    } catch {
      /* released meanwhile */
    }
    await new Promise((r) => setTimeout(r, CLAIM_LOCK_RETRY_MS));
  }
  try {
    return await claim();
  } finally {
    fs.rmdirSync(lock);
  }
}

/**
 * Binds the group's socket; `null` when a live shim already serves it. Starts of one group claim
 * one at a time (withClaimLock), so a socket that refuses is stale. It is still looked at a few
 * times before it is removed: a start of an older tsshim (during a rollout) binds without the lock.
 */
function bindOrReuse(socket: string): Promise<net.Server | null> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
  return withClaimLock(socket, async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await listen(socket);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw e;
      }
      const found = inode(socket);
      if (found === null) continue; // removed meanwhile: bind again
      let live = false;
      for (const waitMs of [0, 50, 100, 200]) {
        if (waitMs) await new Promise((r) => setTimeout(r, waitMs));
        if (inode(socket) !== found || (live = await served(socket, 1000))) break;
      }
      if (live) return null;
      if (inode(socket) === found) fs.rmSync(socket, { force: true });
    }
  });
}

function adjustOomScore(daemonPid: number, containerdPid: number): void {
  try {
    const parent = Number(fs.readFileSync(`/proc/${containerdPid}/oom_score_adj`, 'utf8').trim());
    const score = Math.max(-1000, Math.min(1000, parent + 1));
    fs.writeFileSync(`/proc/${daemonPid}/oom_score_adj`, String(score));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'EACCES') throw e;
  }
}
/** ShimCgroup: like the Go shim, join an existing cgroup (v2, or every v1 hierarchy that has it). */
function moveToCgroup(pid: number, cgroup: string): void {
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    fs.writeFileSync(path.join('/sys/fs/cgroup', cgroup, 'cgroup.procs'), String(pid));
    return;
  }
  let joined = 0;
  for (const hierarchy of fs.readdirSync('/sys/fs/cgroup')) {
    const procs = path.join('/sys/fs/cgroup', hierarchy, cgroup, 'cgroup.procs');
    if (!fs.existsSync(procs)) continue;
    fs.writeFileSync(procs, String(pid));
    joined++;
  }
  if (joined === 0) throw new Error(`shim cgroup ${cgroup} does not exist`);
}

export interface GroupSocket {
  address: string;
  socket: string;
  group: string;
  /** Listening on the group's socket; null when a live shim already serves the group. */
  server: net.Server | null;
}

/** Binds this container's group socket, or finds the shim that already serves the group. */
export async function claimGroupSocket(
  flags: ShimFlags,
  opts: StartOptions,
  bundle: string,
  socketDir: string
): Promise<GroupSocket> {
  const group = opts.perNode ? PER_NODE_GROUP : groupKey(flags.id, readAnnotations(bundle));
  const socket = socketPath(flags.address, flags.namespace, group, socketDir);
  const address = toAddress(socket);
  const server = await bindOrReuse(socket);
  if (server) fs.chmodSync(socket, 0o600);
  else writeFileAtomic(bundleFile(bundle, 'address'), address);
  return { address, socket, group, server };
}

/** What the Go shim does to its daemon: shim cgroup, OOM score just above containerd's; then the bundle files. */
export function settleDaemon(
  pid: number,
  opts: StartOptions,
  containerdPid: number,
  bundle: string,
  address: string
): void {
  if (opts.shimCgroup) moveToCgroup(pid, opts.shimCgroup);
  adjustOomScore(pid, containerdPid);
  writeFileAtomic(bundleFile(bundle, 'address'), address);
  writeFileAtomic(bundleFile(bundle, 'shimPid'), String(pid));
}

export async function runStart(
  flags: ShimFlags,
  opts: StartOptions,
  daemonEntry: string[],
  config: ShimConfig
): Promise<string> {
  const bundle = process.cwd();
  const claimed = await claimGroupSocket(flags, opts, bundle, config.socketDir);
  if (claimed.server) spawnDaemon(flags, opts, daemonEntry, claimed, process.ppid, bundle);
  return claimed.address;
}

/**
 * Starts the daemon (`daemonEntry`: node flags and script) that serves the group socket just bound.
 * The caller exits without closing its listener afterwards.
 */
export function spawnDaemon(
  flags: ShimFlags,
  opts: StartOptions,
  daemonEntry: string[],
  claimed: GroupSocket,
  containerdPid: number,
  bundle: string
): void {
  const { address, socket, group, server } = claimed;
  if (!server) throw new Error('spawnDaemon: no group socket bound');
  // The listening descriptor, handed to the daemon as its fd 3: Node keeps it on the undocumented
  // _handle of a listening net.Server.
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const args = [...daemonEntry, '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.debug) args.push('-debug');
  const child = spawn(process.execPath, args, {
    cwd: bundle,
    detached: true, // new session: containerd's process group signals do not reach the shim
    stdio: ['ignore', 'ignore', 'ignore', fd],
    env: { ...process.env, TSSHIM_SOCKET: socket, TSSHIM_GROUP: group },
  });
  child.unref();
  try {
    settleDaemon(child.pid!, opts, containerdPid, bundle, address);
  } catch (e) {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
    fs.rmSync(socket, { force: true });
    throw e;
  }
  // The daemon holds its own copy of the listening fd. Closing ours would unlink the socket path
  // (libuv does that on close), so the caller exits without closing it.
  server.unref();
}
