import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lazyTimeout, withinLazy } from '../../src/sys/lazy-timeout';

const turn = () => new Promise((r) => setImmediate(r));
const realSetTimeout = setTimeout; // before any test spies on it

test('lazyTimeout: cancelled within its turns, no timer is ever armed (a cleared one would still wake the process)', async (t) => {
  const timers = t.mock.method(globalThis, 'setTimeout');
  let fired = false;
  const cancel = lazyTimeout(() => (fired = true), 50);
  await turn();
  cancel();
  await new Promise((r) => realSetTimeout(r, 80));
  assert.equal(fired, false);
  assert.equal(timers.mock.callCount(), 0);
});

test('lazyTimeout: not cancelled, it fires once, `ms` after it was made (not after its turns)', async () => {
  const t0 = Date.now();
  const at = await new Promise<number>((r) => lazyTimeout(() => r(Date.now()), 60));
  assert.ok(at - t0 >= 59, `fired after ${at - t0} ms`);
  let count = 0;
  const cancel = lazyTimeout(() => count++, 5, 3);
  await new Promise((r) => setTimeout(r, 40));
  cancel(); // after it fired: nothing more happens
  assert.equal(count, 1);
});

test('withinLazy: true when the wait ends first, false at the bound, and nothing is left armed', async (t) => {
  assert.equal(await withinLazy(Promise.resolve(), 1000), true);
  assert.equal(await withinLazy(new Promise(() => {}), 20), false);
  const timers = t.mock.method(globalThis, 'setTimeout');
  assert.equal(await withinLazy(turn(), 1000), true);
  assert.equal(timers.mock.callCount(), 0, 'a wait over within a turn arms no timer');
});
