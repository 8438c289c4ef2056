// Cgroup helpers for tests that make real cgroups.
import { promises as fsp } from 'node:fs';
import { sleep } from './wait';

/** rmdir of a cgroup the kernel may still call busy for a moment after its last process left. */
export async function rmdirRetry(dir: string, tries = 100): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await fsp.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || i >= tries) throw err;
      await sleep(20);
    }
  }
}
