// Interop with a real (private) containerd: our ttrpc Client calls containerd's Go ttrpc server.
// Forward an event to containerd's ttrpc socket and watch it come out of `ctr events`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { Writer } from 'protobufjs/minimal';
import { Client, Code, TtrpcError } from '../../src/ttrpc';
import { Containerd, startContainerd } from '../support/harness';

const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const NS_KEY = 'containerd-namespace-ttrpc';

// Hand-encoded so this test depends on nothing but the wire format:
// ForwardRequest{1: Envelope{1: Timestamp{1 seconds, 2 nanos}, 2 namespace, 3 topic, 4 Any{1 type_url, 2 value}}}
function forwardRequest(namespace: string, topic: string, typeUrl: string, value: Uint8Array, at = new Date()): Buffer {
  const w = Writer.create();
  w.uint32((1 << 3) | 2).fork(); // envelope
  w.uint32((1 << 3) | 2).fork(); // timestamp
  w.uint32((1 << 3) | 0).int64(Math.floor(at.getTime() / 1000));
  w.uint32((2 << 3) | 0).int32((at.getTime() % 1000) * 1e6);
  w.ldelim();
  w.uint32((2 << 3) | 2).string(namespace);
  w.uint32((3 << 3) | 2).string(topic);
  w.uint32((4 << 3) | 2).fork();
  w.uint32((1 << 3) | 2).string(typeUrl);
  w.uint32((2 << 3) | 2).bytes(value);
  w.ldelim();
  w.ldelim();
  return Buffer.from(w.finish());
}

function taskOOM(containerId: string): Uint8Array {
  return Writer.create()
    .uint32((1 << 3) | 2)
    .string(containerId)
    .finish();
}

let cd: Containerd;
let events: ChildProcess;
const eventLines: string[] = [];
const lineWaiters: Array<() => void> = [];

function waitForLine(pred: (l: string) => boolean, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const hit = eventLines.find(pred);
      if (hit) resolve(hit);
      return !!hit;
    };
    if (check()) return;
    const timer = setTimeout(
      () => reject(new Error(`event not seen; ctr events printed:\n${eventLines.join('\n')}`)),
      timeoutMs
    );
    lineWaiters.push(() => {
      if (check()) clearTimeout(timer);
    });
  });
}

before(async () => {
  cd = await startContainerd({ logLevel: 'info' });
  events = cd.spawnCtr(['events']);
  let buf = '';
  events.stdout!.on('data', (c: Buffer) => {
    buf += c.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    eventLines.push(...parts.filter((l) => l.trim()));
    for (const w of lineWaiters) w();
  });
  await new Promise((r) => setTimeout(r, 500)); // let ctr subscribe before we publish
});

after(async () => {
  if (events?.pid) process.kill(events.pid, 'SIGTERM');
  await cd?.stop();
});

test('Forward reaches containerd and shows up in `ctr events`', async () => {
  const client = await Client.connect(cd.ttrpcAddress);
  try {
    const id = `oom-${process.pid}-${Date.now()}`;
    const reply = await client.call(
      EVENTS_SERVICE,
      'Forward',
      forwardRequest(cd.namespace, '/tasks/oom', 'containerd.events.TaskOOM', taskOOM(id)),
      { timeoutMs: 5000, metadata: { [NS_KEY]: [cd.namespace] } }
    );
    assert.equal(reply.length, 0, 'Forward returns google.protobuf.Empty');
    const line = await waitForLine((l) => l.includes(id));
    assert.match(line, new RegExp(`\\s${cd.namespace}\\s+/tasks/oom\\s`));
    assert.ok(line.includes(`"container_id":"${id}"`), line);

    // Many concurrent calls on one connection (odd, increasing ids are what a 1.2 server demands).
    const ids = Array.from({ length: 32 }, (_, i) => `${id}-${i}`);
    await Promise.all(
      ids.map((cid) =>
        client.call(
          EVENTS_SERVICE,
          'Forward',
          forwardRequest(cd.namespace, '/tasks/oom', 'containerd.events.TaskOOM', taskOOM(cid)),
          { timeoutMs: 5000, metadata: { [NS_KEY]: [cd.namespace] } }
        )
      )
    );
    for (const cid of ids) await waitForLine((l) => l.includes(`"${cid}"`));
  } finally {
    client.close();
  }
});

test("containerd's Go server errors decode into TtrpcError codes", async () => {
  const client = await Client.connect(cd.ttrpcAddress);
  try {
    await assert.rejects(
      client.call(EVENTS_SERVICE, 'NoSuchMethod', Buffer.alloc(0)),
      (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && e.message === 'method NoSuchMethod'
    );
    await assert.rejects(
      client.call('no.such.Service', 'X', Buffer.alloc(0)),
      (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && e.message === 'service no.such.Service'
    );
    // A malformed envelope inside a valid Request: containerd answers with a status, the connection lives on.
    await assert.rejects(
      client.call(EVENTS_SERVICE, 'Forward', Buffer.from([0x0a, 0x05, 0x01])),
      (e: TtrpcError) => e instanceof TtrpcError && e.code !== Code.OK
    );
    assert.equal(
      (
        await client.call(
          EVENTS_SERVICE,
          'Forward',
          forwardRequest(cd.namespace, '/tasks/oom', 'containerd.events.TaskOOM', taskOOM('after-error')),
          { metadata: { [NS_KEY]: [cd.namespace] } }
        )
      ).length,
      0
    );
    // Our client refuses an oversized request locally, without breaking the connection.
    await assert.rejects(
      client.call(EVENTS_SERVICE, 'Forward', Buffer.alloc(5 << 20)),
      (e: TtrpcError) => e.code === Code.RESOURCE_EXHAUSTED
    );
    assert.ok(!client.closed);
  } finally {
    client.close();
  }
});
