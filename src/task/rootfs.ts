// Mounting CreateTaskRequest.rootfs onto <bundle>/rootfs and undoing it. mount(2)/umount2(2)
// directly for what the kernel understands on its own (overlay, bind, tmpfs: every snapshotter
// containerd ships); mount(8) for the rest (loop devices, FUSE helpers, very long option lists).
// A mount(8) process costs ~8 ms on every Create; the syscall costs microseconds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Reaper } from '../sys/reaper';
import { mount, SysError, umount2 } from '../sys/libc';
import { mountsBelow } from './mounts';
import { MS_BIND, MS_REMOUNT, mountCall } from './mount-options';

export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export async function mountRootfs(bundle: string, mounts: MountSpec[]): Promise<void> {
  if (mounts.length === 0) return;
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(rootfs, { recursive: true, mode: 0o711 });
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const target = m.target ? path.join(rootfs, path.resolve('/', m.target)) : rootfs;
      await mountOne(m, target);
      done.push(target);
    }
  } catch (e) {
    await unmountAll(rootfs);
    throw e;
  }
}

async function mountOne(m: MountSpec, target: string): Promise<void> {
  const type = m.type || 'none';
  const call = mountCall(type, m.options);
  if (!call) return mountWithHelper(m, type, target);
  try {
    mount(m.source, target, type, call.flags, call.data || null);
    // A bind mount ignores ro/nosuid/... on the first call: apply them with a remount.
    if (call.bindRemount) mount('', target, '', call.flags | MS_REMOUNT | MS_BIND, null);
    if (call.propagation) mount('', target, '', call.propagation, null);
  } catch (e) {
    throw new Error(`failed to mount rootfs component ${JSON.stringify(m)}: ${(e as Error).message}`);
  }
}

async function mountWithHelper(m: MountSpec, type: string, target: string): Promise<void> {
  const args = ['-t', type];
  if (m.options.length) args.push('-o', m.options.join(','));
  args.push('--', m.source, target);
  const r = await Reaper.instance().run('mount', args, { timeoutMs: 30_000 });
  if (r.code !== 0)
    throw new Error(`failed to mount rootfs component ${JSON.stringify(m)}: ${r.stderr.toString().trim()}`);
}

/** Unmounts everything at or below dir; errors are collected, not thrown midway. */
export async function unmountAll(dir: string): Promise<string[]> {
  const errors: string[] = [];
  for (let attempt = 0; attempt < 50; attempt++) {
    const mounts = mountsBelow(dir);
    if (mounts.length === 0) return errors;
    for (const mp of mounts) {
      try {
        umount2(mp);
      } catch (e) {
        const code = e instanceof SysError ? e.code : '';
        if (code === 'EBUSY') {
          await new Promise((res) => setTimeout(res, 50));
          continue;
        }
        // EINVAL: no longer a mount point (someone else unmounted it since we listed).
        if (code !== 'EINVAL' && code !== 'ENOENT') errors.push(`umount ${mp}: ${(e as Error).message}`);
      }
    }
    if (errors.length) return errors;
  }
  return errors;
}
