// `delete`: containerd runs it after every task deletion and when a shim died (5 s limit). It only
// cleans up container <id> (a live group shim may still serve others) and prints a DeleteResponse.
// Kept free of protobufjs' generated code and of the reaper so it starts as fast as Node allows.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Writer } from 'protobufjs/minimal';
import type { ShimFlags } from './flags';
import { mountsBelow } from '../task/mounts';
import { bundleFile, readInitExit, readInitPid, readRuntimeFiles } from '../task/bundle-files';
import { RuncClient, RuncError, type CommandRunner } from '../runc';
import { groupKey, PER_NODE_GROUP, readAnnotations, shimGroupFile, shimJournalFile, shimPidFile } from './address';
import { oneShotRunner } from './one-shot-runner';
import { unixTime, wallClockAt } from '../sys/clock';
import { readTrimmed } from '../sys/text-file';
import type { ShimConfig } from './config';

/** runc delete's own deadline, inside containerd's 5 s for the whole subcommand (umount follows). */
const RUNC_DELETE_TIMEOUT_MS = 4000;

/** DeleteResponse{pid, exit_status, exited_at}, encoded by hand (no generated code loaded). */
export function encodeDeleteResponse(pid: number, status: number, atMs: number): Uint8Array {
  const w = Writer.create();
  if (pid) w.uint32(8).uint32(pid);
  if (status) w.uint32(16).uint32(status);
  const at = unixTime(wallClockAt(atMs));
  w.uint32(26).fork().uint32(8).int64(at.seconds).uint32(16).int32(at.nanos).ldelim();
  return w.finish();
}

function isMounted(dir: string): boolean {
  return mountsBelow(dir).length > 0;
}

/** True when a process has a socket bound to `socket` (a live shim listening on it). */
function socketServed(socket: string): boolean {
  const table = readTrimmed('/proc/net/unix');
  if (table === null) return true; // cannot tell: leave the files alone
  return table.split('\n').some((l) => l.endsWith(' ' + socket));
}

/**
 * A shim killed by SIGKILL leaves its socket, event outbox and per-node pid file behind. When no
 * process serves the socket any more, remove them: containerd publishes the exit and delete of a
 * dead shim's tasks itself, so replaying that outbox from a later shim of the same group would only
 * repeat stale events. A live group shim (or a newer one on the same path) is never touched.
 */
function removeDeadShimFiles(bundle: string, stateDir: string, namespace: string, id: string): void {
  const address = readTrimmed(bundleFile(bundle, 'address'));
  if (!address) return;
  const socket = address.replace(/^unix:\/\//, '');
  if (!path.isAbsolute(socket) || socketServed(socket)) return;
  try {
    if (fs.lstatSync(socket).isSocket()) fs.unlinkSync(socket);
  } catch {
    /* already gone */
  }
  fs.rmSync(shimJournalFile(socket, stateDir), { force: true });
  fs.rmSync(shimPidFile(socket, stateDir), { force: true });
  // The group's lookup too, while it names this socket (its container's group, or the per-node one).
  for (const group of [groupKey(id, readAnnotations(bundle)), PER_NODE_GROUP]) {
    const lookup = shimGroupFile(namespace, group, stateDir);
    if (lookup && readTrimmed(lookup)?.startsWith(`${path.basename(socket)} `)) fs.rmSync(lookup, { force: true });
  }
}

export async function runDelete(
  flags: ShimFlags,
  config: ShimConfig,
  warn: (msg: string) => void,
  runner: CommandRunner = oneShotRunner
): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const runtime = readRuntimeFiles(bundle, warn);
  const root = path.join(runtime.root, flags.namespace);
  // runc keeps a state dir per container: only call runc (and pay for it) when there is one.
  if (fs.existsSync(path.join(root, flags.id))) {
    // The flags the Go shim's delete gives runc: no --criu, no --debug.
    const runc = new RuncClient({
      binary: runtime.binary,
      root,
      log: bundleFile(bundle, 'runcLog'),
      systemdCgroup: runtime.systemdCgroup,
      runner,
    });
    try {
      await runc.delete(flags.id, { force: true, timeoutMs: RUNC_DELETE_TIMEOUT_MS });
    } catch (e) {
      warn(`runc delete --force ${flags.id} failed: ${e instanceof RuncError ? e.runcMessage : (e as Error).message}`);
    }
  }
  const rootfs = path.join(bundle, 'rootfs');
  for (let i = 0; i < 10 && isMounted(rootfs); i++) {
    const r = spawnSync('umount', ['-R', rootfs], { timeout: 2000, stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) {
      warn(`umount ${rootfs}: ${r.stderr.toString().trim()}`);
      break;
    }
  }
  removeDeadShimFiles(bundle, config.stateDir, flags.namespace, flags.id);
  // The shim persisted the real exit status at reap time; 137 only when the container never exited
  // before the shim died (it was killed by runc delete --force above).
  const exit = readInitExit(bundle);
  return encodeDeleteResponse(readInitPid(bundle), exit?.status ?? 137, exit?.at ?? Date.now());
}
