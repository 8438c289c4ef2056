// The server's resource limits against hostile peers: pending calls, partial frames, unread replies.
// Each test checks that the bound holds and that another, well-behaved connection is still served.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFrame, MessageType } from '../../src/ttrpc/channel';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/codec';
import { Client, Code, Server, TtrpcError, type ResourceLimits } from '../../src/ttrpc';
import { Tally } from '../../src/ttrpc/limits';
import { RawPeer, tempSocketDir } from '../support/raw-peer';

const SVC = 'test.v1.Limits';
const tmp = tempSocketDir('ttrpc-limits-');
let sockN = 0;
after(() => tmp.remove());

interface Harness {
  server: Server;
  path: string;
  held: Array<() => void>;
  served: { n: number };
  activity: { n: number };
}

async function start(limits: Partial<ResourceLimits>): Promise<Harness> {
  const held: Array<() => void> = [];
  const served = { n: 0 };
  const activity = { n: 0 };
  const server = new Server({ limits, onActivity: () => activity.n++ });
  server.register(SVC, {
    Echo: (p) => {
      served.n++;
      return p;
    },
    Block: () => new Promise<Uint8Array>((resolve) => held.push(() => resolve(Buffer.from('ok')))),
    Kilobyte: () => {
      served.n++;
      return Buffer.alloc(1024, 0x61);
    },
  });
  const path = tmp.path(`l${sockN++}.sock`);
  await server.listen(path);
  return { server, path, held, served, activity };
}

const frame = (id: number, method: string, payload = Buffer.alloc(0)) =>
  encodeFrame(id, MessageType.REQUEST, 0, encodeRequest({ service: SVC, method, payload }));

async function statusOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
    return Code.OK;
  } catch (e) {
    assert.ok(e instanceof TtrpcError, String(e));
    return e.code;
  }
}

test('pending calls: past the per-connection bound calls get RESOURCE_EXHAUSTED, other connections are served', async () => {
  const h = await start({ maxPendingCallsPerConnection: 3 });
  const hog = await Client.connect(h.path);
  const other = await Client.connect(h.path);
  try {
    const pending = [1, 2, 3].map(() => hog.call(SVC, 'Block', Buffer.alloc(0)));
    await sleep(50);
    await assert.rejects(hog.call(SVC, 'Echo', Buffer.from('x')), (e: TtrpcError) => {
      assert.equal(e.code, Code.RESOURCE_EXHAUSTED);
      assert.match(e.message, /too many pending calls on this connection \(limit 3\)/);
      return true;
    });
    assert.equal(h.server.usage.pendingCalls, 3);
    assert.deepEqual(await other.call(SVC, 'Echo', Buffer.from('y')), Buffer.from('y'));
    for (const release of h.held) release();
    await Promise.all(pending);
    assert.equal(h.server.usage.pendingCalls, 0);
    assert.deepEqual(
      await hog.call(SVC, 'Echo', Buffer.from('z')),
      Buffer.from('z'),
      'served again once its calls answered'
    );
  } finally {
    hog.close();
    other.close();
    await h.server.shutdown(100);
  }
});

test('pending calls in total: the connection holding its fair share is refused, a newcomer is served', async () => {
  const h = await start({ maxPendingCallsPerConnection: 100, maxPendingCalls: 4 });
  const hog = await Client.connect(h.path);
  const newcomer = await Client.connect(h.path);
  try {
    const pending = [1, 2, 3, 4].map(() => hog.call(SVC, 'Block', Buffer.alloc(0)));
    await sleep(50);
    assert.equal(await statusOf(hog.call(SVC, 'Echo', Buffer.alloc(1))), Code.RESOURCE_EXHAUSTED);
    const theirs = newcomer.call(SVC, 'Block', Buffer.alloc(0));
    await sleep(50);
    assert.equal(h.server.usage.pendingCalls, 5, 'the newcomer below its fair share got its call');
    for (const release of h.held) release();
    await Promise.all([...pending, theirs]);
  } finally {
    hog.close();
    newcomer.close();
    await h.server.shutdown(100);
  }
});

test('pending calls are released when their connection closes', async () => {
  const h = await start({ maxPendingCallsPerConnection: 10 });
  const peer = await RawPeer.connect(h.path);
  for (let i = 0; i < 5; i++) peer.write(frame(2 * i + 1, 'Block'));
  await sleep(50);
  assert.equal(h.server.usage.pendingCalls, 5);
  peer.destroy();
  await sleep(50);
  assert.equal(h.server.usage.pendingCalls, 0);
  await h.server.shutdown(100);
});

test('partial frames: past the total the connection holding the most is closed; the bound holds, others are served', async () => {
  const h = await start({ maxPartialFrameBytes: 1 << 20 });
  const socks: net.Socket[] = [];
  const closed: boolean[] = [];
  const header = (n: number) => {
    const b = Buffer.alloc(10);
    b.writeUInt32BE(n, 0);
    b.writeUInt32BE(1, 4);
    b[8] = MessageType.REQUEST;
    return b;
  };
  try {
    for (let i = 0; i < 4; i++) {
      const s = net.connect(h.path);
      s.on('error', () => {});
      const idx = i;
      closed[idx] = false;
      s.on('close', () => {
        closed[idx] = true;
      });
      socks.push(s);
      s.write(Buffer.concat([header(2 << 20), Buffer.alloc(400 * 1024, 1)]));
      await sleep(100);
      assert.ok(h.server.usage.partialFrameBytes <= 1 << 20, `held ${h.server.usage.partialFrameBytes}`);
    }
    await sleep(100);
    assert.ok(closed.filter(Boolean).length >= 2, `connections closed by the server: ${closed}`);
    const other = await Client.connect(h.path);
    assert.deepEqual(await other.call(SVC, 'Echo', Buffer.from('still')), Buffer.from('still'));
    other.close();
  } finally {
    for (const s of socks) s.destroy();
    await sleep(50);
    assert.equal(h.server.usage.partialFrameBytes, 0, 'closed connections hold nothing');
    await h.server.shutdown(100);
  }
});

test('unread replies: the server stops reading a peer that does not read, and serves it all once it reads', async () => {
  const h = await start({ maxUnsentBytesPerConnection: 64 * 1024, maxPendingCallsPerConnection: 100_000 });
  const s = net.connect(h.path);
  await new Promise((r) => s.once('connect', r));
  s.pause();
  const total = 20_000; // 20 MB of replies if they were all queued
  let wrote = 0;
  const frames: Buffer[] = [];
  for (let i = 0; i < total; i++) frames.push(frame(2 * i + 1, 'Kilobyte'));
  const all = Buffer.concat(frames);
  s.write(all, () => {
    wrote = all.length;
  });
  try {
    await sleep(1000);
    assert.ok(h.served.n < total / 2, `served ${h.served.n} of ${total} while the peer read nothing`);
    assert.notEqual(wrote, all.length, 'the server stopped reading: our write did not complete');
    const other = await Client.connect(h.path);
    assert.deepEqual(await other.call(SVC, 'Echo', Buffer.from('ok')), Buffer.from('ok'));
    other.close();
    // Now read: everything gets answered, in full.
    let replies = 0;
    const { FrameDecoder } = await import('../../src/ttrpc/channel');
    const done = new Promise<void>((resolve) => {
      const dec = new FrameDecoder({
        frame: (_h, d) => {
          assert.equal(decodeResponse(d).status?.code ?? 0, 0);
          if (++replies === total) resolve();
        },
        oversize: () => assert.fail('oversize'),
      });
      s.on('data', (c: Buffer) => dec.push(c));
    });
    s.resume();
    await done;
    assert.equal(replies, total);
  } finally {
    s.destroy();
    await h.server.shutdown(100);
  }
});

test('onActivity fires when connections open and close', async () => {
  const h = await start({});
  const c = await Client.connect(h.path);
  await c.call(SVC, 'Echo', Buffer.from('a'));
  const opened = h.activity.n;
  assert.ok(opened >= 1);
  c.close();
  await sleep(50);
  assert.ok(h.activity.n > opened, 'close counted');
  await h.server.shutdown(100);
});

test('Tally keeps its total and finds the largest holder', () => {
  const t = new Tally<string>();
  t.set('a', 5);
  t.set('b', 7);
  t.set('a', 2);
  assert.equal(t.total, 9);
  assert.equal(t.largest(), 'b');
  t.set('b', 0);
  assert.equal(t.total, 2);
  assert.equal(t.largest(), 'a');
  t.set('a', 0);
  assert.equal(t.largest(), undefined);
});
