import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import {
  FILE_GROWTH_MIN_KB,
  FOLLOW_UP_GC_MS,
  type Footprint,
  HEAP_CHANGE_MIN_BYTES,
  IDLE_GC_MS,
  IDLE_SLACK_MS,
  IdleCollector,
  MAX_FOLLOW_UPS,
  QUERIES_PER_ACTIVITY,
} from '../../src/shim/idle-gc';
import { DAEMON_NODE_FLAGS } from '../../src/shim/node-flags';
import { createLogger, type Logger } from '../../src/sys/logger';

import { sleep, until } from '../support/wait';

// The collector's timing runs on mocked timers and a mocked clock: each test moves time forward
// by hand, so a loaded machine that runs timers late changes nothing (tick() runs every timer
// that falls due on the way, in order).
function mockedTime(t: TestContext): (ms: number) => void {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() }); // a real clock's values: lastGc starts at 0
  return (ms) => t.mock.timers.tick(ms);
}

/**
 * A collector on a fake collection that records its `compact` flag, runs `onCollect` (what the
 * cleanup leaves) and reports itself done at once, measured by `footprint`, with `droppingFileKb`
 * as what its trim is about to drop.
 */
function measuredCollector(
  footprint: () => Footprint,
  o: { rss?: number | (() => number); onCollect?: () => void; droppingFileKb?: number; log?: Logger } = {}
) {
  const calls: (boolean | undefined)[] = [];
  const rss = o.rss;
  const c = new IdleCollector(
    30,
    (compact, done) => {
      calls.push(compact);
      o.onCollect?.();
      done?.(o.droppingFileKb ?? 0);
    },
    { footprint, rss: typeof rss === 'function' ? rss : () => rss ?? 50 << 20, log: o.log }
  );
  return { c, calls };
}

/** measuredCollector on `footprint` whose every collection gives back 4 MiB (a follow-up worth another). */
function shrinkingCollector(footprint: () => Footprint) {
  let rss = 200 << 20;
  return measuredCollector(footprint, {
    rss: () => rss,
    onCollect: () => {
      rss -= 4 << 20;
    },
  });
}

/** `times` calls, each before the pending follow-up is due (a kubelet's Stats), `before` each one. */
function callsCuttingFollowUpsShort(advance: (ms: number) => void, c: IdleCollector, times: number, before = () => {}) {
  for (let i = 0; i < times; i++) {
    advance(FOLLOW_UP_GC_MS / 2);
    before();
    c.activity();
    advance(30);
  }
}

const STEADY: Footprint = { heapUsedBytes: 1 << 20, anonResidentKb: 1 << 10, fileResidentKb: 1 << 10 };

test('idle collector: one collection once calls stop, none while they go on', (t) => {
  const advance = mockedTime(t);
  let runs = 0;
  const c = new IdleCollector(60, () => {
    runs++;
  });
  for (let i = 0; i < 6; i++) {
    c.activity();
    advance(20);
  }
  assert.equal(runs, 0, 'no collection while calls keep coming');
  // The last call was at 100 ms, 20 ms ago; the slack of a 60 ms wait is half of it (IDLE_SLACK_MS).
  advance(9);
  assert.equal(runs, 0, 'not before 30 ms of quiet after the last call');
  advance(31);
  assert.equal(runs, 1, 'by 60 ms of quiet at the latest (here at 40: its timer was due then)');
  assert.equal(c.collections, 1);
  advance(120);
  assert.equal(runs, 1, 'quiet with nothing new: no second collection');
  c.activity();
  advance(60);
  assert.equal(runs, 2, 'new activity, new collection');
  c.close();
});

test('idle collector: calls within IDLE_SLACK_MS of the first (an exec) get their look when the first armed timer fires, not at a second wake-up', (t) => {
  const advance = mockedTime(t);
  const timers = t.mock.method(globalThis, 'setTimeout');
  let runs = 0;
  const c = new IdleCollector(IDLE_GC_MS, () => {
    runs++;
  });
  c.activity();
  advance(IDLE_SLACK_MS - 100);
  c.activity();
  advance(IDLE_GC_MS - (IDLE_SLACK_MS - 100));
  assert.equal(runs, 1, 'collected when the first timer fired');
  const delays = timers.mock.calls.map((call) => call.arguments[1] as number);
  assert.deepEqual(
    delays.filter((ms) => ms <= IDLE_GC_MS),
    [IDLE_GC_MS],
    'one idle timer armed (the rest are follow-ups): no second wake-up for the remainder'
  );
  c.close();
});

test('idle collector: one follow-up collection after the first (V8 frees pages after gc() returns), then none while it gives nothing back', (t) => {
  const advance = mockedTime(t);
  let runs = 0;
  const c = new IdleCollector(
    30,
    () => {
      runs++;
    },
    { rss: () => 50 << 20 }
  );
  c.activity();
  advance(30);
  assert.equal(runs, 1);
  advance(FOLLOW_UP_GC_MS);
  assert.equal(runs, 2, 'the follow-up ran');
  advance(10 * FOLLOW_UP_GC_MS);
  assert.equal(runs, 2, 'and only one: it gave nothing back');
  c.close();
});

test('idle collector: more follow-ups while each still gives memory back, at most MAX_FOLLOW_UPS', (t) => {
  const advance = mockedTime(t);
  let runs = 0;
  let rss = 100 << 20;
  const c = new IdleCollector(
    30,
    () => {
      runs++;
      rss -= 4 << 20;
    },
    { rss: () => rss }
  );
  c.activity();
  advance(30);
  for (let i = 1; i <= MAX_FOLLOW_UPS; i++) {
    advance(FOLLOW_UP_GC_MS);
    assert.equal(runs, 1 + i, `follow-up ${i} ran: the one before freed 4 MiB`);
  }
  advance(10 * FOLLOW_UP_GC_MS);
  assert.equal(runs, 1 + MAX_FOLLOW_UPS, 'no more than MAX_FOLLOW_UPS');
  c.close();
});

test('idle collector: close cancels a pending collection; no gc function means disabled', (t) => {
  const advance = mockedTime(t);
  let runs = 0;
  const c = new IdleCollector(30, () => {
    runs++;
  });
  c.activity();
  c.close();
  advance(1000);
  assert.equal(runs, 0);
  const off = new IdleCollector(30, undefined);
  assert.equal(off.enabled, false);
  off.activity();
  advance(1000);
  assert.equal(off.collections, 0);
});

test('idle collector: background work (scrapes) gets a collection, never postpones one, and is rate-limited', (t) => {
  const advance = mockedTime(t);
  let runs = 0;
  const c = new IdleCollector(
    60,
    () => {
      runs++;
    },
    { backgroundMinMs: 400 }
  );
  c.background();
  advance(60);
  assert.equal(runs, 1, 'a scrape on an idle shim is followed by a collection');
  // Scrapes every 20 ms: within the minimum interval they cause no second collection...
  for (let i = 0; i < 5; i++) {
    c.background();
    advance(20);
  }
  advance(100);
  assert.equal(runs, 1, 'background collections are rate-limited');
  advance(400);
  assert.equal(runs, 2, '...but their garbage is collected once the interval has passed');
  // ...and they never hold back the collection a Task call asked for.
  c.activity();
  for (let i = 0; i < 6; i++) {
    c.background();
    advance(10);
  }
  assert.equal(runs, 3, 'Task activity collected on time despite scrapes every 10 ms');
  c.close();
});

test('idle collector: a quiet period gets a collection only after the heap or the resident code grew', (t) => {
  const advance = mockedTime(t);
  const clean: Footprint = { heapUsedBytes: 10 << 20, anonResidentKb: 12 << 10, fileResidentKb: 20 << 10 };
  const now = { ...clean };
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l) }, 'debug');
  const { c, calls } = measuredCollector(() => ({ ...now }), { onCollect: () => Object.assign(now, clean), log });
  const runs = () => calls.length;
  const quietPeriod = (heapGrowth: number, fileGrowthKb: number, anonGrowthKb = 0) => {
    now.heapUsedBytes += heapGrowth;
    now.anonResidentKb += anonGrowthKb;
    now.fileResidentKb += fileGrowthKb;
    c.activity();
    advance(30);
  };
  quietPeriod(0, 0);
  assert.equal(runs(), 1, 'the first quiet period always gets one: nothing to compare with yet');
  advance(FOLLOW_UP_GC_MS);
  assert.equal(runs(), 2, 'and its follow-up');
  advance(10 * FOLLOW_UP_GC_MS);
  // A small call (a Stats): some heap, the code it runs faulted back in. Twice over: still small.
  quietPeriod(300 << 10, 6 << 10);
  quietPeriod(300 << 10, 4 << 10);
  assert.equal(runs(), 2, 'no collection after calls that left little behind');
  assert.equal(c.skipped, 2);
  assert.deepEqual(lines, [], 'and no log line: with a Stats every 10 s that would be a fifo write each time');
  quietPeriod(HEAP_CHANGE_MIN_BYTES, 0);
  assert.equal(runs(), 3, 'heap growth since the last cleanup (added up over quiet periods) gets one');
  assert.equal(lines.length, 1);
  assert.match(lines[0], /msg="idle: changed since the last cleanup" heap_growth_kb=2\d\d\d /);
  advance(10 * FOLLOW_UP_GC_MS);
  const before = runs();
  quietPeriod(0, FILE_GROWTH_MIN_KB);
  assert.equal(runs(), before + 1, 'so does resident code growth');
  advance(10 * FOLLOW_UP_GC_MS);
  quietPeriod(0, 0, HEAP_CHANGE_MIN_BYTES >> 10);
  assert.equal(runs(), before + 3, 'and anonymous memory that V8 does not count (malloc), after the follow-up');
  c.close();
});

test('idle collector: queries (a Stats every 10 s) wake it only once in QUERIES_PER_ACTIVITY; a call that changes something, every time', (t) => {
  const advance = mockedTime(t);
  const now: Footprint = { ...STEADY };
  let looks = 0;
  const { c, calls } = measuredCollector(() => {
    looks++;
    return { ...now };
  });
  c.activity();
  advance(30); // the first cleanup
  for (let i = 0; i <= MAX_FOLLOW_UPS; i++) advance(FOLLOW_UP_GC_MS); // and its follow-ups
  const cleanups = calls.length;
  looks = 0;
  for (let i = 1; i < QUERIES_PER_ACTIVITY; i++) {
    c.query();
    advance(10_000);
  }
  assert.equal(looks, 0, 'no look at the footprint after a lone query: nothing woke up');
  now.heapUsedBytes += HEAP_CHANGE_MIN_BYTES; // what the queries left, added up
  c.query();
  advance(30);
  assert.equal(calls.length, cleanups + 1, 'the QUERIES_PER_ACTIVITY-th query is looked after, and cleaned up after');
  for (let i = 0; i <= MAX_FOLLOW_UPS; i++) advance(FOLLOW_UP_GC_MS);
  looks = 0;
  const skipped = c.skipped;
  c.query();
  c.activity(); // e.g. an exec's Start
  advance(30);
  assert.equal(looks, 1, 'a call that changes something is looked after at once');
  assert.equal(c.skipped, skipped + 1, '(nothing changed: no cleanup)');
  c.close();
});

test('idle collector: the resident code a cleanup leaves is counted without what its trim drops', (t) => {
  const advance = mockedTime(t);
  // Read before the trim drops anything (whatever runs after the drop faults code back in): 20 MiB
  // of files resident, 18 MiB of which the trim is about to drop.
  const now: Footprint = { heapUsedBytes: 10 << 20, anonResidentKb: 12 << 10, fileResidentKb: 20 << 10 };
  const { c, calls } = measuredCollector(() => ({ ...now }), { droppingFileKb: 18 << 10 });
  c.activity();
  advance(30);
  advance(10 * FOLLOW_UP_GC_MS);
  const n = calls.length;
  now.fileResidentKb = (2 << 10) + FILE_GROWTH_MIN_KB - 1;
  c.activity();
  advance(30);
  assert.equal(calls.length, n, 'less than FILE_GROWTH_MIN_KB above the 2 MiB left: no collection');
  now.fileResidentKb = (2 << 10) + FILE_GROWTH_MIN_KB;
  c.activity();
  advance(30);
  assert.equal(calls.length, n + 1, 'FILE_GROWTH_MIN_KB above what the trim left: a collection');
  c.close();
});

test("idle collector: a call that cuts a cleanup's follow-ups short does not cancel them", (t) => {
  const advance = mockedTime(t);
  const { c, calls } = measuredCollector(() => STEADY);
  c.activity();
  advance(30);
  assert.equal(calls.length, 1);
  advance(FOLLOW_UP_GC_MS / 2);
  c.activity(); // a call before the follow-up: the idle wait again
  advance(30);
  assert.equal(calls.length, 2, 'the follow-up runs once the shim is quiet again, though nothing grew since the first');
  c.close();
});

test('idle collector: a chain of follow-ups that calls keep cutting short goes on, it does not start again', (t) => {
  const advance = mockedTime(t);
  // Nothing grows between the collections.
  const { c, calls } = shrinkingCollector(() => STEADY);
  c.activity();
  advance(30);
  callsCuttingFollowUpsShort(advance, c, 4 * MAX_FOLLOW_UPS);
  for (let i = 0; i < MAX_FOLLOW_UPS + 1; i++) advance(FOLLOW_UP_GC_MS);
  assert.equal(
    calls.length,
    1 + MAX_FOLLOW_UPS,
    'the cleanup and its MAX_FOLLOW_UPS follow-ups, however often cut short'
  );
  c.close();
});

test('idle collector: a chain cut short by calls that changed memory starts again (a hostile client mid-attack)', (t) => {
  const advance = mockedTime(t);
  const now: Footprint = { ...STEADY };
  const { c, calls } = shrinkingCollector(() => ({ ...now }));
  c.activity();
  advance(30);
  // Partial frames held: the heap keeps growing.
  callsCuttingFollowUpsShort(advance, c, 4 * MAX_FOLLOW_UPS, () => (now.heapUsedBytes += HEAP_CHANGE_MIN_BYTES));
  assert.equal(calls.length, 1 + 4 * MAX_FOLLOW_UPS, 'a collection after each of those calls');
  for (let i = 0; i < MAX_FOLLOW_UPS + 1; i++) advance(FOLLOW_UP_GC_MS);
  assert.equal(calls.length, 1 + 5 * MAX_FOLLOW_UPS, "and the last one's follow-ups once the calls stop");
  c.close();
});

test('idle collector: after a cleanup in the middle of a burst, the fall of the heap gets a collection', (t) => {
  const advance = mockedTime(t);
  const now: Footprint = { heapUsedBytes: 100 << 20, anonResidentKb: 120 << 10, fileResidentKb: 20 << 10 };
  // The burst still holds its memory: the cleanup leaves it all.
  const { c, calls } = measuredCollector(() => ({ ...now }), { rss: 150 << 20 });
  c.activity();
  advance(30);
  advance(10 * FOLLOW_UP_GC_MS);
  const n = calls.length;
  now.heapUsedBytes = 10 << 20; // the burst's connections closed; V8 freed their buffers itself
  c.activity();
  advance(30);
  assert.equal(calls.length, n + 1, 'the pages V8 freed are handed back');
  c.close();
});

test('idle collector: released() collects even when nothing grew', (t) => {
  const advance = mockedTime(t);
  const { c, calls } = measuredCollector(() => STEADY);
  c.activity();
  advance(30);
  advance(10 * FOLLOW_UP_GC_MS);
  const n = calls.length;
  c.activity();
  advance(30);
  assert.equal(calls.length, n, 'nothing grew: no collection');
  c.released();
  advance(30);
  assert.deepEqual(calls.slice(n), [true], 'the compacting collection after the last container went');
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

test('idle collector: with compactFirst the first collection, and only that one, compacts', (t) => {
  const advance = mockedTime(t);
  const calls: (boolean | undefined)[] = [];
  const c = new IdleCollector(
    30,
    (compact) => {
      calls.push(compact);
    },
    { compactFirst: true, rss: () => 50 << 20 }
  );
  c.activity();
  advance(30);
  advance(FOLLOW_UP_GC_MS); // the follow-up
  c.activity();
  advance(30);
  assert.deepEqual(
    calls.map((x) => x === true),
    [true, false, false]
  );
  c.close();
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

test('collectAndTrim: done runs once, inside the trim, while the pages it is about to drop are still resident', () => {
  const idle = path.resolve(__dirname, '../../src/shim/idle-gc.js');
  const script = `
    const { collectAndTrim } = require(${JSON.stringify(idle)});
    const { residentKb } = require(${JSON.stringify(path.resolve(__dirname, '../../src/shim/trim.js'))});
    require('net'); require('child_process');
    const seen = [];
    collectAndTrim(true, false, (kb) => seen.push({ kb, fileKb: residentKb().fileKb }));
    setTimeout(() => console.log(JSON.stringify({ seen, fileKb: residentKb().fileKb })), 1000);
  `;
  const res = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  const j = JSON.parse(res.stdout) as { seen: { kb: number; fileKb: number }[]; fileKb: number };
  assert.equal(j.seen.length, 1, 'done once');
  const [{ kb, fileKb }] = j.seen;
  assert.ok(kb > 4096, `the trim drops ${kb} kB of files`);
  assert.ok(fileKb >= kb, `when done runs, ${fileKb} kB of files are resident, ${kb} of them to be dropped`);
  assert.ok(j.fileKb < fileKb - kb / 2, `files resident after the trim: ${j.fileKb} kB`);
});

test('collectAndTrim: the trim called off before it ran never runs (a spare claimed right after its warm-up)', () => {
  const idle = path.resolve(__dirname, '../../src/shim/idle-gc.js');
  const script = `
    const { collectAndTrim } = require(${JSON.stringify(idle)});
    const seen = [];
    const cancel = collectAndTrim(true, false, (kb) => seen.push(kb));
    setTimeout(cancel, 50);
    collectAndTrim(true, false, () => seen.push('kept'));
    setTimeout(() => console.log(JSON.stringify(seen)), 1000);
  `;
  const res = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), ['kept'], 'only the trim not called off ran');
});
