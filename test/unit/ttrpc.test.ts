// Server + client over real unix sockets in a temp dir.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Flags, MessageType } from '../../src/ttrpc/channel';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/codec';
import { CallContext, Client, Code, getMetadata, Server, TtrpcError } from '../../src/ttrpc';
import { RawPeer, tempSocketDir } from '../support/raw-peer';

const SVC = 'test.v1.Echo';
const tmp = tempSocketDir();
let sockN = 0;
const logs: Array<{ level: string; msg: string }> = [];

function makeServer(opts: ConstructorParameters<typeof Server>[0] = {}) {
  const server = new Server({ log: (level, msg) => logs.push({ level, msg }), ...opts });
  const seen: { ctx?: CallContext; aborted: Array<unknown>; late?: { aborted: boolean; code?: Code } } = {
    aborted: [],
  };
  server.register(SVC, {
    Echo: (p) => p,
    Delay: async (p) => {
      await sleep(p.readUInt32BE(0));
      return p;
    },
    Meta: (_p, ctx) =>
      Buffer.from(
        JSON.stringify({
          ns: getMetadata(ctx.metadata, 'Containerd-Namespace-Ttrpc'),
          multi: getMetadata(ctx.metadata, 'multi'),
        })
      ),
    WaitAbort: (_p, ctx) => {
      seen.ctx = ctx;
      return new Promise((_resolve, reject) =>
        ctx.signal.addEventListener('abort', () => {
          seen.aborted.push(ctx.signal.reason);
          reject(ctx.signal.reason);
        })
      );
    },
    // Looks at ctx.signal only after the wait (its AbortController is made on first use).
    LateSignal: async (p, ctx) => {
      await sleep(p.readUInt32BE(0));
      seen.late = { aborted: ctx.signal.aborted, code: (ctx.signal.reason as TtrpcError | undefined)?.code };
      return p;
    },
    NotFound: () => {
      throw new TtrpcError(Code.NOT_FOUND, 'container not created: not found');
    },
    Plain: () => {
      throw new Error('cannot start a running process');
    },
    Nil: () => undefined as unknown as Uint8Array,
    Huge: () => Buffer.alloc(5 << 20),
  });
  return { server, seen };
}

async function start(opts?: ConstructorParameters<typeof Server>[0]) {
  const path = tmp.path(`s${sockN++}.sock`);
  const { server, seen } = makeServer(opts);
  await server.listen(path);
  return { server, seen, path };
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const req = (method: string, payload = Buffer.alloc(0), extra: object = {}) =>
  encodeRequest({ service: SVC, method, payload, ...extra });

async function expectCode(p: Promise<unknown>, code: Code, message?: string | RegExp) {
  await assert.rejects(p, (e: TtrpcError) => {
    assert.ok(e instanceof TtrpcError, `not a TtrpcError: ${e}`);
    assert.equal(e.code, code, `code ${Code[e.code]} (${e.message})`);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  });
}

let main: Awaited<ReturnType<typeof start>>;
let client: Client;
before(async () => {
  main = await start();
  client = await Client.connect(main.path);
});
after(async () => {
  client.close();
  await main.server.shutdown(100);
  tmp.remove();
});

test('unary echo, including an empty payload', async () => {
  assert.deepEqual(await client.call(SVC, 'Echo', Buffer.from('hello')), Buffer.from('hello'));
  assert.equal((await client.call(SVC, 'Echo', Buffer.alloc(0))).length, 0);
});

test('64 concurrent calls on one connection are answered out of order', async () => {
  const peer = await RawPeer.connect(main.path);
  for (let i = 0; i < 64; i++) {
    const body = Buffer.concat([u32((64 - i) * 3), u32(i)]); // later requests finish first
    peer.sendFrame(2 * i + 1, MessageType.REQUEST, 0, req('Delay', body));
  }
  const order: number[] = [];
  for (let i = 0; i < 64; i++) {
    const f = await peer.nextFrame();
    assert.ok(f);
    const res = decodeResponse(f.data);
    assert.equal(res.status, undefined);
    const idx = res.payload.readUInt32BE(4);
    assert.equal(f.header.streamId, 2 * idx + 1, 'reply on the stream of its request');
    order.push(idx);
  }
  assert.deepEqual(
    [...order].sort((a, b) => a - b),
    [...Array(64).keys()]
  );
  assert.ok(order[0] > order[63], 'completion order, not request order');
  peer.destroy();
  // And through the client API.
  const replies = await Promise.all(
    [...Array(64).keys()].map((i) => client.call(SVC, 'Delay', Buffer.concat([u32((i * 7) % 20), u32(i)])))
  );
  replies.forEach((r, i) => assert.equal(r.readUInt32BE(4), i));
});

test('metadata reaches the handler case-insensitively and multi-valued', async () => {
  const out = await client.call(SVC, 'Meta', Buffer.alloc(0), {
    metadata: { 'containerd-namespace-ttrpc': ['default'], MULTI: ['a', 'b'] },
  });
  assert.deepEqual(JSON.parse(out.toString()), { ns: ['default'], multi: ['a', 'b'] });
});

test('server deadline: ctx.deadline set and signal aborted with DEADLINE_EXCEEDED', async () => {
  const peer = await RawPeer.connect(main.path);
  const t0 = Date.now();
  peer.sendFrame(1, MessageType.REQUEST, 0, req('WaitAbort', Buffer.alloc(0), { timeoutNano: 80_000_000 }));
  const f = await peer.nextFrame();
  assert.ok(f);
  assert.ok(Date.now() - t0 >= 70);
  assert.equal(decodeResponse(f.data).status?.code, Code.DEADLINE_EXCEEDED);
  const ctx = main.seen.ctx as CallContext;
  assert.ok(ctx.deadline && Math.abs(ctx.deadline - (t0 + 80)) < 50);
  peer.destroy();
});

test('server deadline: a call answered in the turn it came arms no timer (a cleared one would still wake the process when due); a longer one does', async (t) => {
  const peer = await RawPeer.connect(main.path);
  try {
    const timers = t.mock.method(globalThis, 'setTimeout');
    // The server's deadline timers (sys/lazy-timeout.ts arms them; the peer's waits are the test's).
    const deadlineTimers = () =>
      timers.mock.calls.filter((c) => String((c as { stack?: Error }).stack?.stack).includes('lazy-timeout')).length;
    peer.sendFrame(1, MessageType.REQUEST, 0, req('Echo', Buffer.from('x'), { timeoutNano: 2_000_000_000 }));
    assert.ok(await peer.nextFrame());
    await new Promise((r) => setImmediate(r));
    assert.equal(deadlineTimers(), 0, "no deadline timer for an Echo with containerd's 2 s");
    const body = Buffer.concat([u32(30), u32(1)]);
    peer.sendFrame(3, MessageType.REQUEST, 0, req('Delay', body, { timeoutNano: 2_000_000_000 }));
    const f = await peer.nextFrame();
    assert.ok(f);
    assert.equal(decodeResponse(f.data).status, undefined, 'answered before its deadline');
    assert.equal(deadlineTimers(), 1, 'a call still running after its turn gets its deadline timer');
  } finally {
    peer.destroy();
  }
});

test('server deadline: a handler that looks at ctx.signal only after the deadline sees it aborted', async () => {
  const peer = await RawPeer.connect(main.path);
  main.seen.late = undefined;
  peer.sendFrame(1, MessageType.REQUEST, 0, req('LateSignal', u32(150), { timeoutNano: 30_000_000 }));
  // The handler ignored the signal and answers after the deadline (as before: the server does not answer for it).
  const f = await peer.nextFrame();
  peer.destroy();
  assert.ok(f);
  assert.deepEqual(main.seen.late, { aborted: true, code: Code.DEADLINE_EXCEEDED });
});

test('client deadline fails locally and drops the late reply', async () => {
  const t0 = Date.now();
  await expectCode(
    client.call(SVC, 'Delay', Buffer.concat([u32(150), u32(1)]), { timeoutMs: 30 }),
    Code.DEADLINE_EXCEEDED,
    'context deadline exceeded'
  );
  assert.ok(Date.now() - t0 < 140);
  await sleep(160); // the server's late reply arrives and must be ignored
  assert.deepEqual(await client.call(SVC, 'Echo', Buffer.from('still ok')), Buffer.from('still ok'));
  const ac = new AbortController();
  const p = client.call(SVC, 'Delay', Buffer.concat([u32(100), u32(1)]), { signal: ac.signal });
  ac.abort();
  await expectCode(p, Code.CANCELLED);
});

test("unknown service and method answer UNIMPLEMENTED with Go's messages", async () => {
  await expectCode(client.call('no.Such', 'X', Buffer.alloc(0)), Code.UNIMPLEMENTED, 'service no.Such');
  await expectCode(client.call(SVC, 'Nope', Buffer.alloc(0)), Code.UNIMPLEMENTED, 'method Nope');
});

test('throwing handlers answer with a status and never crash the server', async () => {
  await expectCode(client.call(SVC, 'NotFound', Buffer.alloc(0)), Code.NOT_FOUND, 'container not created: not found');
  await expectCode(client.call(SVC, 'Plain', Buffer.alloc(0)), Code.UNKNOWN, 'cannot start a running process');
  await expectCode(client.call(SVC, 'Nil', Buffer.alloc(0)), Code.INTERNAL, 'ttrpc: marshal called with nil');
  assert.deepEqual(await client.call(SVC, 'Echo', Buffer.from('x')), Buffer.from('x'));
});

test('oversized inbound frame: RESOURCE_EXHAUSTED on that stream, connection survives', async () => {
  const peer = await RawPeer.connect(main.path);
  const n = (4 << 20) + 1;
  peer.sendFrame(1, MessageType.REQUEST, 0, Buffer.alloc(n, 0x41));
  peer.sendFrame(3, MessageType.REQUEST, 0, req('Echo', Buffer.from('after')));
  const f1 = await peer.nextFrame(5000);
  assert.ok(f1);
  assert.equal(f1.header.streamId, 1);
  assert.deepEqual(decodeResponse(f1.data).status, {
    code: 8,
    message: `message length ${n} exceed maximum message size of 4194304`,
    details: [],
  });
  const f2 = await peer.nextFrame();
  assert.ok(f2);
  assert.deepEqual(decodeResponse(f2.data).payload, Buffer.from('after'));
  peer.destroy();
});

test('client refuses to send an oversized request; oversized reply becomes RESOURCE_EXHAUSTED', async () => {
  await expectCode(
    client.call(SVC, 'Echo', Buffer.alloc(5 << 20)),
    Code.RESOURCE_EXHAUSTED,
    /exceed maximum message size of 4194304/
  );
  await expectCode(client.call(SVC, 'Huge', Buffer.alloc(0)), Code.RESOURCE_EXHAUSTED, /exceed maximum message size/);
  assert.ok(!client.closed);
  assert.deepEqual(await client.call(SVC, 'Echo', Buffer.from('y')), Buffer.from('y'));
});

test('stream id rules: even id, reuse, Data for an inactive stream', async () => {
  const peer = await RawPeer.connect(main.path);
  peer.sendFrame(2, MessageType.REQUEST, 0, req('Echo'));
  let f = await peer.nextFrame();
  assert.equal(f?.header.streamId, 2);
  assert.deepEqual(decodeResponse(f!.data).status?.message, 'StreamID must be odd for client initiated streams');
  peer.sendFrame(5, MessageType.REQUEST, 0, req('Echo', Buffer.from('a')));
  f = await peer.nextFrame();
  assert.deepEqual(decodeResponse(f!.data).payload, Buffer.from('a'));
  for (const id of [5, 3]) {
    peer.sendFrame(id, MessageType.REQUEST, 0, req('Echo', Buffer.from('b')));
    f = await peer.nextFrame();
    assert.equal(f?.header.streamId, id);
    assert.deepEqual(decodeResponse(f!.data).status, {
      code: 3,
      message: 'StreamID cannot be re-used and must increment',
      details: [],
    });
  }
  peer.sendFrame(99, MessageType.DATA, 0, Buffer.from('z'));
  f = await peer.nextFrame();
  assert.deepEqual(decodeResponse(f!.data).status?.message, 'StreamID is no longer active');
  // Unparsable envelope -> 3; unknown frame type -> ignored.
  peer.sendFrame(7, MessageType.REQUEST, 0, Buffer.from([0x0a, 0x05, 0x61]));
  f = await peer.nextFrame();
  assert.equal(decodeResponse(f!.data).status?.code, Code.INVALID_ARGUMENT);
  assert.match(decodeResponse(f!.data).status!.message, /^unmarshal request error: /);
  peer.sendFrame(9, 0x7f, 0, Buffer.from('future'));
  peer.sendFrame(11, MessageType.REQUEST, 0, req('Echo', Buffer.from('c')));
  f = await peer.nextFrame();
  assert.equal(f?.header.streamId, 11, 'unknown type produced no reply');
  peer.destroy();
});

test('truncated header, garbage and a vanishing peer do not hurt the server', async () => {
  const a = await RawPeer.connect(main.path);
  a.write(Buffer.from([0, 0, 0, 5, 0]));
  a.end();
  await a.closed;
  const b = await RawPeer.connect(main.path);
  b.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'garbage'.repeat(100)));
  const c = await RawPeer.connect(main.path);
  c.write(Buffer.concat([Buffer.from([0, 0, 1, 0, 0, 0, 0, 1, 1, 0]), Buffer.alloc(100)])); // mid-frame
  c.destroy();
  // Replies to peers that are gone (EPIPE / ECONNRESET on write) are dropped quietly.
  const d = await RawPeer.connect(main.path);
  for (let i = 0; i < 8; i++) d.sendFrame(2 * i + 1, MessageType.REQUEST, 0, req('Echo', Buffer.alloc(3 << 20, i)));
  const e = await RawPeer.connect(main.path);
  e.sendFrame(1, MessageType.REQUEST, 0, req('Delay', Buffer.concat([u32(20), u32(0)])));
  await sleep(5);
  d.destroy();
  e.destroy();
  await sleep(40);
  b.destroy();
  assert.deepEqual(await client.call(SVC, 'Echo', Buffer.from('alive')), Buffer.from('alive'));
  await sleep(20);
  assert.equal(main.server.connectionCount, 1, 'only our client is left');
});

test('connection loss cancels in-flight handlers; client fails pending calls with UNAVAILABLE', async () => {
  const { server, seen, path } = await start();
  const c = await Client.connect(path);
  let closed = false;
  c.on('close', () => (closed = true));
  const pending = c.call(SVC, 'WaitAbort', Buffer.alloc(0));
  await sleep(30);
  c.close();
  await expectCode(pending, Code.UNAVAILABLE, 'ttrpc: closed');
  assert.ok(closed);
  await expectCode(c.call(SVC, 'Echo', Buffer.alloc(0)), Code.UNAVAILABLE);
  await sleep(30);
  assert.equal(seen.aborted.length, 1);
  assert.equal((seen.aborted[0] as TtrpcError).code, Code.CANCELLED);
  // The server side going away: the client sees 'close' and UNAVAILABLE.
  const c2 = await Client.connect(path);
  const p2 = c2.call(SVC, 'WaitAbort', Buffer.alloc(0));
  const closedEvent = new Promise((r) => c2.once('close', r));
  await sleep(20);
  await server.shutdown(10);
  await expectCode(p2, Code.UNAVAILABLE, 'ttrpc: closed');
  await closedEvent;
});

test('peer credentials: real SO_PEERCRED passes, a foreign uid is refused and logged', async () => {
  const { server, path } = await start({ peerCheck: 'same-uid' });
  const ok = await Client.connect(path);
  assert.deepEqual(await ok.call(SVC, 'Echo', Buffer.from('me')), Buffer.from('me'));
  ok.close();
  await server.shutdown(50);

  const seenCreds: Array<{ pid: number; uid: number }> = [];
  const fake = await start({ peerCredLookup: () => ({ pid: 4242, uid: 12345, gid: 12345 }) });
  const c = await Client.connect(fake.path);
  await expectCode(c.call(SVC, 'Echo', Buffer.from('x')), Code.UNAVAILABLE, 'ttrpc: closed');
  assert.ok(logs.some((l) => l.level === 'warn' && l.msg.includes('refusing connection')));
  await fake.server.shutdown(50);

  const custom = await start({
    peerCheck: (cred) => {
      seenCreds.push(cred);
      return cred.pid === process.pid;
    },
  });
  const c3 = await Client.connect(custom.path);
  assert.deepEqual(await c3.call(SVC, 'Echo', Buffer.from('y')), Buffer.from('y'));
  assert.equal(seenCreds[0].uid, process.getuid!());
  c3.close();
  await custom.server.shutdown(50);
});

test('graceful shutdown finishes in-flight calls, refuses new ones, and cancels after the grace', async () => {
  const { server, seen, path } = await start();
  const c = await Client.connect(path);
  const slow = c.call(SVC, 'Delay', Buffer.concat([u32(100), u32(7)]));
  await sleep(10);
  const t0 = Date.now();
  const down = server.shutdown(2000);
  const late = expectCode(c.call(SVC, 'Echo', Buffer.alloc(0)), Code.UNAVAILABLE, 'ttrpc: server closed');
  assert.equal((await slow).readUInt32BE(4), 7);
  await late;
  await down;
  assert.ok(Date.now() - t0 < 1000, 'did not wait for the whole grace');
  await assert.rejects(Client.connect(path));

  const s2 = await start();
  const c2 = await Client.connect(s2.path);
  const stuck = c2.call(SVC, 'WaitAbort', Buffer.alloc(0));
  await sleep(10);
  await s2.server.shutdown(50);
  await expectCode(stuck, Code.UNAVAILABLE);
  assert.equal(s2.seen.aborted.length, 1, 'handler was cancelled when the grace ran out');
  assert.equal(seen.aborted.length, 0);
});

test('request flags on unary calls are ignored and the data close flag is valid', async () => {
  const peer = await RawPeer.connect(main.path);
  peer.sendFrame(1, MessageType.REQUEST, Flags.REMOTE_CLOSED, req('Echo', Buffer.from('f')));
  const f = await peer.nextFrame();
  assert.deepEqual(decodeResponse(f!.data).payload, Buffer.from('f'));
  peer.destroy();
});
