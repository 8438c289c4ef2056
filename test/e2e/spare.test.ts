// Warm spares: the next container's `start` hands the container to an idle pre-booted shim.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startContainerd, uniqueId, pidAlive, TSSHIM_RUNTIME, type Containerd } from './harness';
import { makeRootfs, PATH_ENV_ARGS } from './rootfs';
import { sparePool, waitingSpares } from '../../src/shim/spare';

let c: Containerd;
let rootfs: string;
before(async () => { c = await startContainerd(); rootfs = makeRootfs(c.dir); });
after(async () => { if (c) await c.stop(); });

async function until<T>(fn: () => T | null | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const runDetached = async (id: string) => {
  const r = await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, '--rootfs', rootfs, id, 'sleep', '1000']);
  assert.equal(r.code, 0, r.stderr + c.logTail(2000));
  return Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
};

test('a waiting spare becomes the next container\'s shim; a dead spare is skipped', async () => {
  const pool = sparePool(c.address);
  const first = await runDetached(uniqueId('sp1'));
  const [spare] = await until(() => { const s = waitingSpares(pool); return s.length ? s : null; }, 'a spare in the pool');
  assert.notEqual(spare, first);
  const id2 = uniqueId('sp2');
  const second = await runDetached(id2);
  assert.equal(second, spare, 'the spare serves the second container');
  const exec = await c.ctr(['task', 'exec', '--exec-id', 'e', id2, 'sh', '-c', 'echo via-spare']);
  assert.equal(exec.stdout, 'via-spare\n', exec.stderr);

  // A spare that died while waiting must not hang or break `start`.
  const [next] = await until(() => { const s = waitingSpares(pool); return s.length ? s : null; }, 'a replacement spare');
  process.kill(next, 'SIGKILL');
  await until(() => !pidAlive(next), 'the killed spare gone');
  const t0 = Date.now();
  const third = await runDetached(uniqueId('sp3'));
  assert.ok(Date.now() - t0 < 8000, 'no 10 s handshake timeout on a dead spare');
  assert.notEqual(third, next);
  assert.equal((await c.ctr(['task', 'ls'])).stdout.split('\n').filter((l) => / RUNNING/.test(l)).length, 3);
});

test('starts that outrun the spares make the pool keep two', async () => {
  const pool = sparePool(c.address);
  await until(() => waitingSpares(pool).length > 0, 'a spare');
  // Back to back: the second start finds only the spare the first container's shim is booting.
  const shims = [];
  for (let i = 0; i < 4; i++) shims.push(await runDetached(uniqueId('burst')));
  assert.equal(new Set(shims).size, 4, 'one shim per container');
  assert.ok(fs.existsSync(path.join(pool, '.starved')), 'a start had to wait for a booting spare');
  await until(() => waitingSpares(pool).length >= 2, 'two spares waiting after the burst', 30_000);
});

test('spares leave with their containerd', async () => {
  const pool = sparePool(c.address);
  await until(() => waitingSpares(pool).length > 0, 'a spare');
  const spares = waitingSpares(pool);
  await c.stop();
  await until(() => spares.every((p) => !pidAlive(p)), 'spares gone', 5000);
});
