// What a waiting spare checks (src/shim/spare.ts): how many spares the pool keeps (one; two while a
// burst of starts lasts, which claims extend and a quiet gap ends), and whether its containerd still
// listens, read from the kernel's table of unix sockets instead of connecting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { BURST_GAP_MS, burstLeftMs, continueBurst, listensOn, spareTarget } from '../../src/shim/spare';

function pool(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'spare-pool-'));
}

function markAt(dir: string, ms: number): void {
  const file = path.join(dir, '.starved');
  fs.writeFileSync(file, '');
  fs.utimesSync(file, ms / 1000, ms / 1000);
}

test('one spare without a burst; two from a start that waited until no start came for BURST_GAP_MS', () => {
  const dir = pool();
  const t = Date.now();
  assert.equal(spareTarget(dir, t), 1, 'no start has waited');
  markAt(dir, t);
  assert.equal(spareTarget(dir, t), 2, 'a start just waited');
  assert.equal(spareTarget(dir, t + BURST_GAP_MS - 1), 2, 'within the gap');
  assert.equal(spareTarget(dir, t + BURST_GAP_MS), 1, 'no start for the gap: the burst is over');
  assert.equal(burstLeftMs(dir, t + BURST_GAP_MS + 5000), 0);
});

test('a claim during a burst extends it; a claim outside one starts none', () => {
  const dir = pool();
  const t = Date.now();
  continueBurst(dir, t);
  assert.equal(fs.existsSync(path.join(dir, '.starved')), false, 'no burst: nothing marked');
  markAt(dir, t - BURST_GAP_MS - 1);
  continueBurst(dir, t);
  assert.equal(spareTarget(dir, t), 1, 'a burst that ended is not revived by a claim');
  markAt(dir, t - BURST_GAP_MS + 100);
  continueBurst(dir, t);
  assert.equal(spareTarget(dir, t + BURST_GAP_MS - 100), 2, 'the claim moved the end of the burst');
});

const line = (flags: string, state: string, p: string, inode = 4242) =>
  `0000000000000000: 00000002 00000000 ${flags} 0001 ${state} ${inode} ${p}\n`;
const HEADER = 'Num       RefCount Protocol Flags    Type St Inode Path\n';

function table(lines: string[]): string {
  const file = path.join(pool(), 'unix');
  fs.writeFileSync(file, HEADER + lines.join(''));
  return file;
}

test('listensOn: only a listening socket bound at exactly that path counts', () => {
  const sock = '/run/x/containerd.sock';
  assert.equal(listensOn(sock, table([line('00010000', '01', sock)])), true);
  assert.equal(listensOn(sock, table([line('00000000', '03', sock)])), false, 'a connected socket, not a listener');
  assert.equal(
    listensOn(sock, table([line('00010000', '01', `${sock}.ttrpc`)])),
    false,
    'another path it is a prefix of'
  );
  assert.equal(listensOn(sock, table([line('00010000', '01', `/other${sock}`)])), false, 'a path ending in it');
  assert.equal(listensOn(sock, table([line('00000000', '03', sock), line('00010000', '01', sock)])), true);
  assert.equal(listensOn(sock, path.join(pool(), 'missing')), false, 'no table: cannot tell (the caller connects)');
});

test('listensOn reads tables larger than its buffer, with the line anywhere (also across a read boundary)', () => {
  const sock = '/tmp/c.sock';
  const filler = (n: number) => Array.from({ length: n }, (_, i) => line('00000000', '03', '', 1000 + i));
  const one = line('00010000', '01', sock).length;
  // floor(straddles): the listener's line starts 10 bytes before the first 64 KiB read ends, across it.
  const fill = line('00000000', '03', '', 1000).length;
  const straddles = (64 * 1024 - 10 - HEADER.length) / fill;
  for (const before of [0, 1, 700, Math.floor(straddles), Math.ceil(straddles), 3000]) {
    const lines = filler(before);
    lines.push(line('00010000', '01', sock), ...filler(2000));
    assert.equal(listensOn(sock, table(lines)), true, `after ${before} lines (${one} bytes the line)`);
    lines.splice(before, 1);
    assert.equal(listensOn(sock, table(lines)), false, `without it, ${before}`);
  }
});

test("listensOn: this namespace's /proc/net/unix shows a server while it listens, not after it closed", async () => {
  const sock = path.join(pool(), 'c.sock');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    assert.equal(listensOn(sock), true);
  } finally {
    await new Promise((r) => server.close(r));
  }
  assert.equal(listensOn(sock), false);
});
