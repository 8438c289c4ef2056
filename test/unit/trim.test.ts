import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { parseSmaps, residentKb, trimmable, trimResidentSet } from '../../src/shim/trim';
import { readConfig } from '../../src/shim/config';

const SMAPS = `55d0c0000000-55d0c2000000 r-xp 00000000 08:01 123 /usr/bin/node
Rss:                9000 kB
Anonymous:             0 kB
55d0c2000000-55d0c2100000 r--p 02000000 08:01 123 /usr/bin/node
Rss:                 900 kB
Anonymous:           120 kB
55d0c2100000-55d0c2200000 rw-p 02100000 08:01 123 /usr/bin/node
Anonymous:            64 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
7f0000200000-7f0000300000 r--s 00000000 08:01 9 /dev/shm/x
Anonymous:             0 kB
7f0000400000-7f0000500000 r--p 00000000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
`;

test('trim: only private, read-only, file-backed mappings without copy-on-write pages', () => {
  const maps = parseSmaps(SMAPS);
  assert.equal(maps.length, 7);
  assert.equal(maps[0].start, 0x55d0c0000000n);
  assert.equal(maps[1].anonymousKb, 120);
  assert.equal(maps[1].rssKb, 900);
  assert.equal(maps[2].rssKb, 0, 'no Rss line');
  assert.deepEqual(
    maps.filter(trimmable).map((m) => `${m.perms} ${m.path}`),
    [
      'r-xp /usr/bin/node', // text
      'r--p /usr/lib/x86_64-linux-gnu/libc.so.6',
    ]
  ); // not: RELRO (anonymous pages), .data (writable), anon memory, shared mapping, [vdso]
  assert.equal(readConfig({}).trim, true);
  assert.equal(readConfig({ TSSHIM_TRIM: '0' }).trim, false);
});

test('trim: a real process sheds most of its RSS and keeps working', () => {
  const trim = path.resolve(__dirname, '../../src/shim/trim.js');
  const script = `
    const fs = require('fs');
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
    require('net'); require('child_process');
    const before = rss();
    const r = require(${JSON.stringify(trim)}).trimResidentSet();
    const after = rss();
    // Still fully functional: JSON, regexps, a child process, the code just dropped.
    const ok = JSON.parse(JSON.stringify({ a: [1, 2, 3] })).a.length === 3
      && require('child_process').execFileSync('echo', ['hi']).toString() === 'hi\\n';
    console.log(JSON.stringify({ before, after, bytes: r.bytes, ok }));
  `;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  const j = JSON.parse(res.stdout);
  assert.ok(j.ok);
  assert.ok(j.bytes > 0);
  assert.ok(j.after < j.before * 0.7, `RSS ${j.before} -> ${j.after} kB`);
});

test('trim: the young collection, malloc_trim and beforeDrop run after /proc/self/smaps is parsed and before any page is dropped', () => {
  const steps: string[] = [];
  const r = trimResidentSet(
    () => steps.push('scavenge'),
    {
      readSmaps: () => (steps.push('read'), SMAPS),
      drop: (start, len) => (steps.push(`drop ${start.toString(16)} ${len}`), true),
      mallocTrim: () => steps.push('malloc_trim'),
    },
    (kb) => steps.push(`before drop ${kb}`)
  );
  assert.deepEqual(steps, [
    'read',
    'scavenge',
    'malloc_trim',
    'before drop 9000', // the resident kB of what is dropped: node's text (libc's mapping has no Rss line)
    'drop 55d0c0000000 33554432',
    'drop 7f0000400000 1048576',
  ]);
  assert.deepEqual(r, { mappings: 2, bytes: 33554432 + 1048576 });
});

test("trim: with the young collection, the trim leaves little of its own garbage for the next call's scavenge", () => {
  const trim = path.resolve(__dirname, '../../src/shim/trim.js');
  const script = `
    const v8 = require('v8');
    const { trimResidentSet } = require(${JSON.stringify(trim)});
    const young = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size;
    require('net'); require('child_process');
    trimResidentSet(); // loads koffi: its garbage is no trim's
    gc();
    trimResidentSet();
    const without = young();
    gc();
    trimResidentSet(() => gc({ type: 'minor' }));
    const withIt = young();
    console.log(JSON.stringify({ without, withIt }));
  `;
  const res = spawnSync(process.execPath, ['--expose-gc', '--max-semi-space-size=1', '-e', script], {
    encoding: 'utf8',
  });
  assert.equal(res.status, 0, res.stderr);
  const j = JSON.parse(res.stdout);
  assert.ok(j.withIt < j.without / 2, `young generation after the trim: ${j.without} bytes without, ${j.withIt} with`);
});

test('residentKb: RssAnon and RssFile of /proc/self/status, zeros when it cannot be read', () => {
  const status =
    'Name:\tnode\nVmRSS:\t   40000 kB\nRssAnon:\t   12000 kB\nRssFile:\t   27512 kB\nRssShmem:\t       0 kB\n';
  assert.deepEqual(
    residentKb(() => status),
    { anonKb: 12000, fileKb: 27512 }
  );
  assert.deepEqual(
    residentKb(() => {
      throw new Error('no /proc');
    }),
    { anonKb: 0, fileKb: 0 }
  );
  const own = residentKb();
  assert.ok(own.anonKb > 0 && own.fileKb > 0, 'this process has both resident');
});
