// tsshim's warm spares, as the benches wait for them: a spare boots after its shim's Start and
// takes a burst of CPU, which must not land on the operations measured next.
import * as fs from 'node:fs';
import { SPARE_QUIET_MS, sparePool, waitingSpares } from '../../src/shim/spare';
import { sleep } from './stats';

/**
 * Until the shim just started has booted its spare: past its quiet period, the pool holds a booted
 * spare and none is booting (at most `boundMs` more).
 */
export async function spareBooted(address: string, boundMs: number): Promise<void> {
  const pool = sparePool(address);
  await sleep(SPARE_QUIET_MS + 50);
  for (let t = 0; t < boundMs; t += 20) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(pool);
    } catch {
      /* no pool yet */
    }
    if (waitingSpares(pool).length > 0 && !names.some((n) => n.startsWith('.booting-'))) return;
    await sleep(20);
  }
}
