// `delete`: containerd runs it after every task deletion and when a shim died (5 s limit). It only
// cleans up container <id> (a live group shim may still serve others) and prints a DeleteResponse.
// Kept free of protobufjs' generated code and of the reaper so it starts as fast as Node allows.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Writer } from 'protobufjs/minimal';
import type { ShimFlags } from './flags';
import { mountsBelow } from '../task/mounts';
import { shimJournalFile, shimPidFile } from './address';
import type { ShimConfig } from './config';

const DEFAULT_RUNC_ROOT = '/run/containerd/runc';

function readText(file: string): string | null {
  try { return fs.readFileSync(file, 'utf8').trim(); } catch { return null; }
}

export function encodeDeleteResponse(pid: number, status: number, atMs: number): Uint8Array {
  const w = Writer.create();
  if (pid) w.uint32(8).uint32(pid);
  if (status) w.uint32(16).uint32(status);
  w.uint32(26).fork().uint32(8).int64(Math.floor(atMs / 1000)).uint32(16).int32((atMs % 1000) * 1e6).ldelim();
  return w.finish();
}

function isMounted(dir: string): boolean {
  return mountsBelow(dir).length > 0;
}

/** True when a process has a socket bound to `socket` (a live shim listening on it). */
function socketServed(socket: string): boolean {
  const table = readText('/proc/net/unix');
  if (table === null) return true; // cannot tell: leave the files alone
  return table.split('\n').some((l) => l.endsWith(' ' + socket));
}

/**
 * A shim killed by SIGKILL leaves its socket, event outbox and per-node pid file behind. When no
 * process serves the socket any more, remove them: containerd publishes the exit and delete of a
 * dead shim's tasks itself, so replaying that outbox from a later shim of the same group would only
 * repeat stale events. A live group shim (or a newer one on the same path) is never touched.
 */
function removeDeadShimFiles(bundle: string, stateDir: string): void {
  const address = readText(path.join(bundle, 'address'));
  if (!address) return;
  const socket = address.replace(/^unix:\/\//, '');
  if (!path.isAbsolute(socket) || socketServed(socket)) return;
  try { if (fs.lstatSync(socket).isSocket()) fs.unlinkSync(socket); } catch { /* already gone */ }
  fs.rmSync(shimJournalFile(socket, stateDir), { force: true });
  fs.rmSync(shimPidFile(socket, stateDir), { force: true });
}

export function runDelete(flags: ShimFlags, config: ShimConfig, warn: (msg: string) => void): Uint8Array {
  const bundle = flags.bundle || process.cwd();
  const opts = JSON.parse(readText(path.join(bundle, 'options.json')) || '{}');
  const binary = readText(path.join(bundle, 'runtime')) || opts.binary_name || 'runc';
  const root = path.join(opts.root || DEFAULT_RUNC_ROOT, flags.namespace);
  // runc keeps a state dir per container: only call runc (and pay for it) when there is one.
  if (fs.existsSync(path.join(root, flags.id))) {
    const args = ['--root', root, '--log', path.join(bundle, 'log.json'), '--log-format', 'json'];
    if (opts.systemd_cgroup) args.push('--systemd-cgroup');
    args.push('delete', '--force', flags.id);
    const r = spawnSync(binary, args, { timeout: 4000, stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.error || r.status !== 0) warn(`runc delete --force ${flags.id} failed: ${r.error?.message ?? r.stderr.toString().trim()}`);
  }
  const rootfs = path.join(bundle, 'rootfs');
  for (let i = 0; i < 10 && isMounted(rootfs); i++) {
    const r = spawnSync('umount', ['-R', rootfs], { timeout: 2000, stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) { warn(`umount ${rootfs}: ${r.stderr.toString().trim()}`); break; }
  }
  removeDeadShimFiles(bundle, config.stateDir);
  const pid = Number(readText(path.join(bundle, 'init.pid'))) || 0;
  // The shim persisted the real exit status at reap time; 137 only when the container never exited
  // before the shim died (it was killed by runc delete --force above).
  let status = 137;
  let at = Date.now();
  try {
    const exit = JSON.parse(readText(path.join(bundle, 'init.exit')) || '');
    if (typeof exit.status === 'number') { status = exit.status; at = exit.at; }
  } catch { /* never exited */ }
  return encodeDeleteResponse(pid, status, at);
}
