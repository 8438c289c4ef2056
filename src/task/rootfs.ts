// Mounting CreateTaskRequest.rootfs onto <bundle>/rootfs and undoing it. Uses mount(8)/umount(8):
// they know every option and filesystem helper (overlay, fuse, loop) and run in a few ms.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Reaper } from '../shim/reaper';
import { mountsBelow } from './mounts';

export interface MountSpec { type: string; source: string; target?: string; options: string[] }

export async function mountRootfs(bundle: string, mounts: MountSpec[]): Promise<void> {
  if (mounts.length === 0) return;
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(rootfs, { recursive: true, mode: 0o711 });
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const target = m.target ? path.join(rootfs, path.resolve('/', m.target)) : rootfs;
      const args = ['-t', m.type || 'none'];
      if (m.options.length) args.push('-o', m.options.join(','));
      args.push('--', m.source, target);
      const r = await Reaper.instance().run('mount', args, { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`failed to mount rootfs component ${JSON.stringify(m)}: ${r.stderr.toString().trim()}`);
      done.push(target);
    }
  } catch (e) {
    await unmountAll(rootfs);
    throw e;
  }
}

/** Unmounts everything at or below dir; errors are collected, not thrown midway. */
export async function unmountAll(dir: string): Promise<string[]> {
  const errors: string[] = [];
  for (let attempt = 0; attempt < 50; attempt++) {
    const mounts = mountsBelow(dir);
    if (mounts.length === 0) return errors;
    for (const mp of mounts) {
      const r = await Reaper.instance().run('umount', [mp], { timeoutMs: 10_000 });
      if (r.code !== 0) {
        const msg = r.stderr.toString().trim();
        if (/busy/i.test(msg)) { await new Promise((res) => setTimeout(res, 50)); continue; }
        if (!/not mounted|no mount point/i.test(msg)) errors.push(`umount ${mp}: ${msg}`);
      }
    }
    if (errors.length) return errors;
  }
  return errors;
}
