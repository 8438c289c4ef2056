// The event publisher: order, no drops while containerd is away, the journal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Publisher, OutboxJournal, type EventSender } from '../../src/shim/publisher';
import { containerd } from '../../src/gen/proto';

class FakeContainerd implements EventSender {
  up = true;
  received: { topic: string; ns: string; ts: number }[] = [];
  async forward(payload: Uint8Array, ns: string): Promise<void> {
    await new Promise((r) => setImmediate(r));
    if (!this.up) throw new Error('connect ENOENT');
    const req = containerd.services.events.ttrpc.v1.ForwardRequest.decode(payload);
    this.received.push({ topic: req.envelope!.topic!, ns, ts: Number(req.envelope!.timestamp!.seconds) });
  }
  reset(): void {}
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-pub-'));

test('events are delivered in order with namespace and a non-zero timestamp', async () => {
  const fake = new FakeContainerd();
  const p = new Publisher(fake);
  for (let i = 0; i < 100; i++) p.publish('ns1', `/tasks/t${i}`, 'containerd.events.TaskStart', new Uint8Array([8, i]));
  assert.equal(await p.drain(5000), true);
  assert.deepEqual(fake.received.map((r) => r.topic), Array.from({ length: 100 }, (_, i) => `/tasks/t${i}`));
  assert.ok(fake.received.every((r) => r.ns === 'ns1' && r.ts > 1_600_000_000));
});

test('while containerd is down nothing is dropped; afterwards all arrive once, in order', async () => {
  const fake = new FakeContainerd();
  fake.up = false;
  const p = new Publisher(fake);
  for (let i = 0; i < 20; i++) p.publish('ns', `/tasks/e${i}`, 't', new Uint8Array());
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(fake.received.length, 0);
  assert.equal(p.pending().length, 20);
  assert.ok(p.stats.retries > 0);
  fake.up = true;
  p.publish('ns', '/tasks/last', 't', new Uint8Array());
  assert.equal(await p.drain(5000), true);
  assert.deepEqual(fake.received.map((r) => r.topic), [...Array.from({ length: 20 }, (_, i) => `/tasks/e${i}`), '/tasks/last']);
  p.close();
});

test('the journal holds exactly the unacknowledged events, in order', async () => {
  const dir = tmp();
  const file = path.join(dir, 'outbox');
  const fake = new FakeContainerd();
  fake.up = false;
  const p = new Publisher(fake, new OutboxJournal(file));
  p.publish('ns', '/tasks/a', 't', new Uint8Array([1]));
  p.publish('ns', '/tasks/b', 't', new Uint8Array([2]));
  p.close();
  const pending = OutboxJournal.load(file);
  assert.deepEqual(pending.map((e) => e.topic), ['/tasks/a', '/tasks/b']);
  assert.deepEqual([...pending[1].value], [2]);
  fs.rmSync(file);
  const p2 = new Publisher(new FakeContainerd(), new OutboxJournal(file));
  p2.publish('ns', '/tasks/c', 't', new Uint8Array());
  assert.deepEqual(OutboxJournal.load(file).map((e) => e.topic), ['/tasks/c'], 'journalled before it is sent');
  assert.equal(await p2.drain(5000), true);
  p2.close();
  assert.deepEqual(OutboxJournal.load(file), [], 'everything acknowledged');
  fs.rmSync(dir, { recursive: true });
});
