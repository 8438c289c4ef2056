import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdleCollector } from '../../src/shim/idle-gc';
import { DAEMON_NODE_FLAGS } from '../../src/shim/node-flags';

import { sleep, until } from '../support/wait';

test('idle collector: one collection once calls stop, none while they go on', async () => {
  let runs = 0;
  const c = new IdleCollector(60, () => {
    runs++;
  });
  for (let i = 0; i < 6; i++) {
    c.activity();
    await sleep(20);
  }
  assert.equal(runs, 0, 'no collection while calls keep coming');
  await sleep(120);
  assert.equal(runs, 1);
  assert.equal(c.collections, 1);
  await sleep(120);
  assert.equal(runs, 1, 'quiet with nothing new: no second collection');
  c.activity();
  await sleep(120);
  assert.equal(runs, 2, 'new activity, new collection');
  c.close();
});

test('idle collector: one follow-up collection after the first (V8 frees pages after gc() returns), then none while it gives nothing back', async () => {
  const { FOLLOW_UP_GC_MS } = await import('../../src/shim/idle-gc');
  let runs = 0;
  const c = new IdleCollector(
    30,
    () => {
      runs++;
    },
    undefined,
    () => 50 << 20
  );
  c.activity();
  await sleep(100);
  assert.equal(runs, 1);
  await sleep(FOLLOW_UP_GC_MS + 200);
  assert.equal(runs, 2, 'the follow-up ran');
  await sleep(FOLLOW_UP_GC_MS + 200);
  assert.equal(runs, 2, 'and only one: it gave nothing back');
  c.close();
});

test('idle collector: more follow-ups while each still gives memory back, at most MAX_FOLLOW_UPS', async () => {
  const { FOLLOW_UP_GC_MS, MAX_FOLLOW_UPS } = await import('../../src/shim/idle-gc');
  let runs = 0;
  let rss = 100 << 20;
  const c = new IdleCollector(
    30,
    () => {
      runs++;
      rss -= 4 << 20;
    },
    undefined,
    () => rss
  );
  c.activity();
  await sleep(100 + (MAX_FOLLOW_UPS + 1) * (FOLLOW_UP_GC_MS + 150));
  assert.equal(runs, 1 + MAX_FOLLOW_UPS, 'every follow-up freed 4 MiB: as many as allowed ran');
  c.close();
});

test('idle collector: close cancels a pending collection; no gc function means disabled', async () => {
  let runs = 0;
  const c = new IdleCollector(30, () => {
    runs++;
  });
  c.activity();
  c.close();
  await sleep(80);
  assert.equal(runs, 0);
  const off = new IdleCollector(30, undefined);
  assert.equal(off.enabled, false);
  off.activity();
  await sleep(60);
  assert.equal(off.collections, 0);
});

test('idle collector: background work (scrapes) gets a collection, never postpones one, and is rate-limited', async () => {
  let runs = 0;
  const c = new IdleCollector(
    60,
    () => {
      runs++;
    },
    400
  );
  c.background();
  await sleep(120);
  assert.equal(runs, 1, 'a scrape on an idle shim is followed by a collection');
  // Scrapes every 20 ms: within the minimum interval they cause no second collection...
  for (let i = 0; i < 5; i++) {
    c.background();
    await sleep(20);
  }
  await sleep(100);
  assert.equal(runs, 1, 'background collections are rate-limited');
  await sleep(400);
  assert.equal(runs, 2, '...but their garbage is collected once the interval has passed');
  // ...and they never hold back the collection a Task call asked for.
  c.activity();
  const t = setInterval(() => c.background(), 10);
  await sleep(150);
  clearInterval(t);
  assert.equal(runs, 3, 'Task activity collected on time despite scrapes every 10 ms');
  c.close();
});

test('daemon node flags expose gc and cap the young generation', () => {
  assert.ok(DAEMON_NODE_FLAGS.includes('--expose-gc'));
  assert.ok(DAEMON_NODE_FLAGS.some((f) => f.startsWith('--max-semi-space-size=')));
  assert.ok(DAEMON_NODE_FLAGS.includes('--no-warnings'));
});

test('idle collector: released() makes the next collection, and only that one, a compacting one', async () => {
  const calls: (boolean | undefined)[] = [];
  const c = new IdleCollector(30, (compact) => {
    calls.push(compact);
  });
  // Each step waits for its collection rather than a fixed time: a loaded machine runs the 30 ms
  // idle timer late, and released() before the first collection would make that one compact.
  c.activity();
  await until(() => calls.length === 1, 'the first idle collection');
  c.released();
  await until(() => calls.length === 2, 'the collection after released()');
  c.activity();
  await until(() => calls.length === 3, 'the next idle collection');
  c.close();
  assert.deepEqual(
    calls.map((x) => x === true),
    [false, true, false]
  );
});

test('compactingGc: one collection gives back the pages of a fragmented old space', async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  const { compactingGc } = await import('../../src/shim/idle-gc');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (o?: object) => void;
  const oldSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_size;
  let objects: object[] = [];
  for (let i = 0; i < 200_000; i++) objects.push({ i, s: `x${i}` });
  gc();
  gc(); // promoted to the old space
  const full = oldSpace();
  objects = objects.filter((_, i) => i % 10 === 0); // one object in ten lives on, on every page
  await sleep(10);
  compactingGc(gc);
  const after = oldSpace();
  assert.ok(after < full - (8 << 20), `old space ${full} -> ${after} bytes`);
  assert.equal(objects.length, 20_000);
});
