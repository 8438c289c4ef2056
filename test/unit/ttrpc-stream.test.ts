// ttrpc 1.2 streaming: server, client and bidirectional streams, wire flags, cancellation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Flags, MessageType } from '../../src/ttrpc/channel';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/codec';
import { Client, Code, Server, TtrpcError } from '../../src/ttrpc';
import { RawPeer, tempSocketDir } from '../support/raw-peer';

const SVC = 'test.v1.Streams';
const tmp = tempSocketDir();
const path = tmp.path('streams.sock');
let server: Server;
let client: Client;
const endless = { started: 0, aborted: 0, sent: 0 };

before(async () => {
  server = new Server();
  // Count(n): n messages "0".."n-1"; an empty request still invokes the handler (ttrpc issue #126).
  server.registerServerStream(SVC, 'Count', async (payload, _ctx, send) => {
    const n = payload.length ? payload.readUInt32BE(0) : 2;
    for (let i = 0; i < n; i++) await send(Buffer.from(String(i)));
  });
  server.registerServerStream(SVC, 'FailAfterOne', async (_p, _ctx, send) => {
    await send(Buffer.from('one'));
    throw new TtrpcError(Code.FAILED_PRECONDITION, 'stop here');
  });
  server.registerServerStream(SVC, 'Endless', async (_p, ctx, send) => {
    endless.started++;
    ctx.signal.addEventListener('abort', () => endless.aborted++);
    while (!ctx.signal.aborted) {
      await send(Buffer.from('tick'));
      endless.sent++;
      await sleep(2);
    }
  });
  server.registerClientStream(SVC, 'Sum', async (messages) => {
    let sum = 0;
    for await (const m of messages) sum += m.readUInt32BE(0);
    const out = Buffer.alloc(4);
    out.writeUInt32BE(sum);
    return out;
  });
  server.registerBidiStream(SVC, 'Upper', async (messages, _ctx, send) => {
    for await (const m of messages) await send(Buffer.from(m.toString().toUpperCase()));
  });
  await server.listen(path);
  client = await Client.connect(path);
});

after(async () => {
  client.close();
  await server.shutdown(100);
  tmp.remove();
});

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

test('server stream delivers every message in order, then ends', async () => {
  const got: string[] = [];
  for await (const m of client.serverStream(SVC, 'Count', u32(5))) got.push(m.toString());
  assert.deepEqual(got, ['0', '1', '2', '3', '4']);
  const empty: string[] = [];
  for await (const m of client.serverStream(SVC, 'Count', Buffer.alloc(0))) empty.push(m.toString());
  assert.deepEqual(empty, ['0', '1']);
});

test('server stream wire format: Data frames, then Data remote-closed|no-data', async () => {
  const peer = await RawPeer.connect(path);
  peer.sendFrame(
    1,
    MessageType.REQUEST,
    Flags.REMOTE_CLOSED,
    encodeRequest({ service: SVC, method: 'Count', payload: u32(2) })
  );
  const frames = [await peer.nextFrame(), await peer.nextFrame(), await peer.nextFrame()];
  assert.deepEqual(
    frames.map((f) => [f?.header.type, f?.header.flags, f?.data.toString()]),
    [
      [MessageType.DATA, 0, '0'],
      [MessageType.DATA, 0, '1'],
      [MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, ''],
    ]
  );
  peer.destroy();
});

test('a failing server stream ends with its status after the messages sent so far', async () => {
  const got: string[] = [];
  await assert.rejects(
    async () => {
      for await (const m of client.serverStream(SVC, 'FailAfterOne', Buffer.alloc(0))) got.push(m.toString());
    },
    (e: TtrpcError) => e.code === Code.FAILED_PRECONDITION && e.message === 'stop here'
  );
  assert.deepEqual(got, ['one']);
  await assert.rejects(
    async () => {
      for await (const _ of client.serverStream(SVC, 'Missing', Buffer.alloc(0))) {
        /* none */
      }
    },
    (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && e.message === 'method Missing'
  );
});

test('client stops listening with break; closing the connection cancels the handler', async () => {
  const c = await Client.connect(path);
  let n = 0;
  for await (const m of c.serverStream(SVC, 'Endless', Buffer.alloc(0))) {
    assert.equal(m.toString(), 'tick');
    if (++n === 3) break;
  }
  // Frames still arriving for the abandoned stream are dropped; the connection keeps working.
  await sleep(20);
  assert.deepEqual(await c.call(SVC, 'Nope', Buffer.alloc(0)).catch((e: TtrpcError) => e.code), Code.UNIMPLEMENTED);
  assert.equal(endless.aborted, 0);
  c.close();
  await sleep(50);
  assert.equal(endless.aborted, 1);
  const sentAtAbort = endless.sent;
  await sleep(30);
  assert.ok(endless.sent <= sentAtAbort + 1, 'handler stopped sending');
});

test('server stream deadline fails the iteration with DEADLINE_EXCEEDED', async () => {
  await assert.rejects(
    async () => {
      for await (const _ of client.serverStream(SVC, 'Endless', Buffer.alloc(0), { timeoutMs: 40 })) {
        /* drain */
      }
    },
    (e: TtrpcError) => e.code === Code.DEADLINE_EXCEEDED
  );
});

test('client stream: many messages, one reply', async () => {
  const call = client.clientStream(SVC, 'Sum');
  for (let i = 1; i <= 10; i++) await call.send(u32(i));
  assert.equal((await call.closeAndRecv()).readUInt32BE(0), 55);
});

test('bidi stream echoes while the client keeps sending', async () => {
  const call = client.bidiStream(SVC, 'Upper');
  const it = call[Symbol.asyncIterator]();
  await call.send(Buffer.from('a'));
  assert.equal((await it.next()).value.toString(), 'A');
  await call.send(Buffer.from('bc'));
  assert.equal((await it.next()).value.toString(), 'BC');
  await call.closeSend();
  assert.equal((await it.next()).done, true);
});

test('data close carrying data is rejected with InvalidArgument', async () => {
  const peer = await RawPeer.connect(path);
  peer.sendFrame(1, MessageType.REQUEST, Flags.REMOTE_OPEN, encodeRequest({ service: SVC, method: 'Sum' }));
  peer.sendFrame(1, MessageType.DATA, Flags.REMOTE_CLOSED, u32(1));
  const f = await peer.nextFrame();
  assert.equal(f?.header.type, MessageType.RESPONSE);
  assert.deepEqual(decodeResponse(f!.data).status, {
    code: 3,
    message: 'data close message cannot include data',
    details: [],
  });
  // A well-formed client stream on the same connection still works.
  peer.sendFrame(3, MessageType.REQUEST, Flags.REMOTE_OPEN, encodeRequest({ service: SVC, method: 'Sum' }));
  peer.sendFrame(3, MessageType.DATA, 0, u32(4));
  peer.sendFrame(3, MessageType.DATA, 0, u32(5));
  peer.sendFrame(3, MessageType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, Buffer.alloc(0));
  const g = await peer.nextFrame();
  assert.equal(decodeResponse(g!.data).payload.readUInt32BE(0), 9);
  peer.destroy();
});
