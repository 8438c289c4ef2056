// The event publisher: order, no drops while containerd is away, the journal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Publisher, OutboxJournal, TtrpcEventSender, type EventSender } from '../../src/shim/publisher';
import { Client, Server } from '../../src/ttrpc';
import { ServiceName } from '../../src/types/typeurls';
import { containerd } from '../../src/gen/proto';
import { createLogger } from '../../src/sys/logger';

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

test('on a live connection to containerd, publish() has written the Forward request when it returns', async () => {
  const dir = tmp();
  const sock = path.join(dir, 'ttrpc.sock');
  const topics: string[] = [];
  const server = new Server();
  server.register(ServiceName.Events, {
    Forward: (payload) => {
      topics.push(containerd.services.events.ttrpc.v1.ForwardRequest.decode(payload).envelope!.topic!);
      return new Uint8Array(0);
    },
  });
  await server.listen(sock);
  const sender = new TtrpcEventSender(`unix://${sock}`);
  const p = new Publisher(sender);
  const calls: string[] = [];
  const call = Client.prototype.call;
  try {
    p.publish('ns', '/tasks/create', 'containerd.events.TaskCreate', new Uint8Array(0)); // dials
    assert.equal(await p.drain(5000), true);
    Client.prototype.call = function (this: Client, ...args: Parameters<Client['call']>) {
      calls.push(args[1]);
      return call.apply(this, args);
    };
    p.publish('ns', '/tasks/start', 'containerd.events.TaskStart', new Uint8Array(0));
    // Not a promise turn later, when the rest of an RPC (its reply, other events' work) ran first.
    assert.deepEqual(calls, ['Forward']);
    assert.equal(await p.drain(5000), true);
    assert.deepEqual(topics, ['/tasks/create', '/tasks/start']);
  } finally {
    Client.prototype.call = call;
    p.close();
    sender.reset();
    await server.shutdown(0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('events are delivered in order with namespace and a non-zero timestamp', async () => {
  const fake = new FakeContainerd();
  const p = new Publisher(fake);
  for (let i = 0; i < 100; i++) p.publish('ns1', `/tasks/t${i}`, 'containerd.events.TaskStart', new Uint8Array([8, i]));
  assert.equal(await p.drain(5000), true);
  assert.deepEqual(
    fake.received.map((r) => r.topic),
    Array.from({ length: 100 }, (_, i) => `/tasks/t${i}`)
  );
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
  assert.deepEqual(
    fake.received.map((r) => r.topic),
    [...Array.from({ length: 20 }, (_, i) => `/tasks/e${i}`), '/tasks/last']
  );
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
  assert.deepEqual(
    pending.map((e) => e.topic),
    ['/tasks/a', '/tasks/b']
  );
  assert.deepEqual([...pending[1].value], [2]);
  fs.rmSync(file);
  const p2 = new Publisher(new FakeContainerd(), new OutboxJournal(file));
  p2.publish('ns', '/tasks/c', 't', new Uint8Array());
  assert.deepEqual(
    OutboxJournal.load(file).map((e) => e.topic),
    ['/tasks/c'],
    'journalled before it is sent'
  );
  assert.equal(await p2.drain(5000), true);
  p2.close();
  assert.deepEqual(OutboxJournal.load(file), [], 'everything acknowledged');
  fs.rmSync(dir, { recursive: true });
});

/** A journal on a disk that fills up: every write throws ENOSPC while `full` is set. */
class FillingJournal extends OutboxJournal {
  full = false;
  constructor(file: string) {
    super(file);
  }
  private check(): void {
    if (this.full) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  }
  override append(e: Parameters<OutboxJournal['append']>[0]): void {
    this.check();
    super.append(e);
  }
  override ack(seq: number, nothingPending: boolean): void {
    this.check();
    super.ack(seq, nothingPending);
  }
  override rewrite(pending: Parameters<OutboxJournal['rewrite']>[0]): void {
    this.check();
    super.rewrite(pending);
  }
}

function capturingLogger() {
  const lines: { level: string; msg: string }[] = [];
  const sink = {
    write(line: string) {
      lines.push({ level: /level=(\w+)/.exec(line)![1], msg: JSON.parse(/msg=("(?:[^"\\]|\\.)*")/.exec(line)![1]) });
    },
  };
  return { lines, log: createLogger(sink, 'debug') };
}

test('a journal that cannot be written (ENOSPC) degrades durability, never delivery: events sent in order, logged once, counted', async () => {
  const dir = tmp();
  const file = path.join(dir, 'outbox');
  const journal = new FillingJournal(file);
  const fake = new FakeContainerd();
  fake.up = false;
  const { lines, log } = capturingLogger();
  const p = new Publisher(fake, journal, log);
  p.publish('ns', '/tasks/before', 't', new Uint8Array());
  journal.full = true;
  for (let i = 0; i < 10; i++) assert.doesNotThrow(() => p.publish('ns', `/tasks/full${i}`, 't', new Uint8Array()));
  assert.equal(p.pending().length, 11, 'every event queued in memory');
  assert.ok(p.stats.journalFailures >= 10, `failures counted: ${p.stats.journalFailures}`);
  fake.up = true;
  assert.equal(await p.drain(5000), true);
  assert.deepEqual(
    fake.received.map((r) => r.topic),
    ['/tasks/before', ...Array.from({ length: 10 }, (_, i) => `/tasks/full${i}`)]
  );
  const warnings = lines.filter((l) => l.level === 'warning' && /journal/.test(l.msg));
  assert.equal(warnings.length, 1, `one warning for the whole episode: ${JSON.stringify(lines)}`);
  // Space returns: the journal catches up with what is pending then, and only that.
  fake.up = false;
  journal.full = false;
  p.publish('ns', '/tasks/after', 't', new Uint8Array());
  assert.deepEqual(
    OutboxJournal.load(file).map((e) => e.topic),
    ['/tasks/after']
  );
  assert.ok(lines.some((l) => /writable again/.test(l.msg)));
  // A disk that flaps between full and not: still one warning.
  journal.full = true;
  p.publish('ns', '/tasks/again', 't', new Uint8Array());
  journal.full = false;
  p.publish('ns', '/tasks/again2', 't', new Uint8Array());
  assert.equal(lines.filter((l) => l.level === 'warning' && /journal/.test(l.msg)).length, 1);
  p.close();
});

test('the journal catches up while containerd is away, without waiting for a new event', async () => {
  const dir = tmp();
  const file = path.join(dir, 'outbox');
  const journal = new FillingJournal(file);
  const fake = new FakeContainerd();
  fake.up = false;
  const p = new Publisher(fake, journal);
  journal.full = true;
  p.publish('ns', '/tasks/a', 't', new Uint8Array());
  p.publish('ns', '/tasks/b', 't', new Uint8Array());
  journal.full = false;
  for (let i = 0; i < 100 && OutboxJournal.load(file).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    OutboxJournal.load(file).map((e) => e.topic),
    ['/tasks/a', '/tasks/b']
  );
  p.close();
});

test('a short write leaves no torn line behind once the journal catches up', () => {
  const dir = tmp();
  const file = path.join(dir, 'outbox');
  const j = new OutboxJournal(file);
  const e = {
    seq: 1,
    namespace: 'ns',
    topic: '/tasks/x',
    typeUrl: 't',
    value: new Uint8Array([1]),
    at: Date.now(),
    atNanos: 0,
  };
  fs.appendFileSync(file, 'E {"seq":9,"topi'); // what a full disk leaves
  j.rewrite([e]);
  assert.deepEqual(
    OutboxJournal.load(file).map((x) => x.seq),
    [1]
  );
  j.close();
});

test('a symlink planted where the journal goes is neither followed for writing nor read', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-journal-link-'));
  try {
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'E {"seq":1,"topic":"/tasks/exit","ns":"x","value":"","ts":0}\n');
    const journal = path.join(dir, 'sock.outbox');
    fs.symlinkSync(victim, journal);
    assert.deepEqual(OutboxJournal.load(journal), [], 'nothing replayed through the link');
    assert.throws(() => new OutboxJournal(journal), /ELOOP/);
    assert.equal(fs.readFileSync(victim, 'utf8').split('\n').length, 2, 'victim untouched');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
