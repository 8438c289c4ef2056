// Fairness between connections: one connection's pipelined flood is handled a bounded batch per
// event-loop turn, so another connection's request is answered long before the flood is; order
// within a connection and a peer's half-close are kept. Properties only: counts, never timings.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { encodeFrame, FrameDecoder, MessageType } from '../../src/ttrpc/channel';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/codec';
import { Client, Server, type ResourceLimits } from '../../src/ttrpc';
import { FrameBatcher } from '../../src/ttrpc/frame-batcher';
import { tempSocketDir } from '../support/raw-peer';

const SVC = 'test.v1.Fair';
const tmp = tempSocketDir('ttrpc-fair-');
let sockN = 0;
after(() => tmp.remove());

/** A server whose Echo records, in order, which connection each call came from (its payload). */
async function start(limits: Partial<ResourceLimits> = {}): Promise<{ server: Server; path: string; order: string[] }> {
  const order: string[] = [];
  const server = new Server({ limits });
  server.register(SVC, {
    Echo: (p) => {
      order.push(Buffer.from(p).toString());
      return p;
    },
  });
  const path = tmp.path(`f${sockN++}.sock`);
  await server.listen(path);
  return { server, path, order };
}

/** `n` tiny pipelined Echo requests (about 35 bytes each, so one 64 KiB read carries ~1800 of them). */
function flood(n: number, payload: string): Buffer {
  const body = () => encodeRequest({ service: SVC, method: 'Echo', payload: Buffer.from(payload) });
  return Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame(2 * i + 1, MessageType.REQUEST, 0, body())));
}

/** A raw connection that counts replies and checks they come back in request order. */
async function rawFlooder(
  path: string
): Promise<{ socket: net.Socket; replies: () => number; allIn: (n: number) => Promise<void> }> {
  const socket = net.connect(path);
  await new Promise((r) => socket.once('connect', r));
  let replies = 0;
  let waiter: { n: number; resolve: () => void } | null = null;
  const dec = new FrameDecoder({
    frame: (h, d) => {
      assert.equal(h.streamId, 2 * replies + 1, 'replies in request order');
      assert.equal(decodeResponse(d).status?.code ?? 0, 0);
      replies++;
      if (waiter && replies >= waiter.n) waiter.resolve();
    },
    oversize: () => assert.fail('oversize'),
  });
  socket.on('data', (c: Buffer) => dec.push(c));
  const allIn = (n: number) =>
    new Promise<void>((resolve) => {
      if (replies >= n) return resolve();
      waiter = { n, resolve };
    });
  return { socket, replies: () => replies, allIn };
}

test('a flood of pipelined requests on one connection does not hold back another connection', async () => {
  const h = await start({ maxPendingCallsPerConnection: 100_000 });
  const total = 20_000;
  const b = await Client.connect(h.path);
  const a = await rawFlooder(h.path);
  try {
    a.socket.write(flood(total, 'A'));
    await a.allIn(1); // A's backlog is being worked through
    assert.deepEqual(await b.call(SVC, 'Echo', Buffer.from('B')), Buffer.from('B'));
    const aBeforeB = h.order.indexOf('B');
    // Without batching, the whole first read of A (~1800 requests) is handled before B's is even read.
    assert.ok(aBeforeB < 1000, `${aBeforeB} of A's ${total} requests were handled before B's one`);
    await a.allIn(total);
    assert.equal(h.order.filter((x) => x === 'A').length, total, 'all of A served, in order');
  } finally {
    b.close();
    a.socket.destroy();
    await h.server.shutdown(100);
  }
});

test('requests a peer sent before its half-close are all answered, in order', async () => {
  const h = await start({ maxPendingCallsPerConnection: 100_000 });
  const total = 5_000;
  const a = await rawFlooder(h.path);
  try {
    const closed = new Promise((r) => a.socket.once('close', r));
    a.socket.end(flood(total, 'A'));
    await a.allIn(total);
    assert.equal(a.replies(), total);
    await closed; // and the server then closes the connection
  } finally {
    a.socket.destroy();
    await h.server.shutdown(100);
  }
});

test('frames per turn: a batch of one still serves everything, in order', async () => {
  const h = await start({ maxPendingCallsPerConnection: 100_000, maxFramesPerTurn: 1 });
  const a = await rawFlooder(h.path);
  try {
    a.socket.write(flood(3_000, 'A'));
    await a.allIn(3_000);
  } finally {
    a.socket.destroy();
    await h.server.shutdown(100);
  }
});

test('FrameBatcher hands on at most perTurn frames per turn, in order, and reports its backlog', async () => {
  const got: number[] = [];
  const backlog: boolean[] = [];
  const batcher = new FrameBatcher(
    {
      frame: (h) => got.push(h.streamId),
      oversize: (h) => got.push(-h.streamId),
    },
    3,
    (b) => backlog.push(b)
  );
  const header = (streamId: number) => ({ length: 0, streamId, type: MessageType.REQUEST, flags: 0 });
  for (let id = 1; id <= 7; id++) {
    if (id === 4) batcher.oversize(header(id));
    else batcher.frame(header(id), Buffer.alloc(0));
  }
  batcher.flush();
  assert.deepEqual(got, [1, 2, 3], 'one batch now');
  assert.deepEqual(backlog, [true]);
  batcher.flush(); // a read during the backlog must not jump the queue
  assert.deepEqual(got, [1, 2, 3]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, [1, 2, 3, -4, 5, 6], 'the next batch a turn later');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, [1, 2, 3, -4, 5, 6, 7]);
  assert.deepEqual(backlog, [true, false]);
  batcher.frame(header(9), Buffer.alloc(0));
  batcher.stop();
  batcher.flush();
  assert.deepEqual(got, [1, 2, 3, -4, 5, 6, 7], 'nothing after stop');
});
