// The mount table, read without loading anything heavy: shared by the daemon's rootfs unmount and
// the `delete` command, which must stay cheap.
import * as fs from 'node:fs';
import { parseMountinfo } from './cgroups/discovery';

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo). */
export function mountsBelow(dir: string): string[] {
  let info = '';
  // No /proc: nothing is known to be mounted; the caller's umount of the rootfs itself still runs.
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return parseMountinfo(info)
    .map((m) => m.mountPoint)
    .filter((mp) => mp === dir || mp.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}
