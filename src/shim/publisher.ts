// Event publisher with a durable outbox. Every event is appended to a journal before it is sent and
// acknowledged in the journal once containerd accepted it. Events are delivered one at a time, in
// order, and retried without limit while containerd is away (the Go shim drops them after ~21 s).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writer } from 'protobufjs/minimal';
import type { Logger } from '../sys/logger';
import { nullLogger } from '../sys/logger';
import { ServiceName } from '../types/typeurls';
import { unixTime, wallClockNow } from '../sys/clock';

export interface OutboxEvent {
  seq: number;
  namespace: string;
  topic: string;
  typeUrl: string;
  value: Uint8Array;
  at: number; // ms since epoch, the envelope timestamp (time of publishing)
  atNanos: number;
}

export interface EventSender {
  /** Resolves when containerd accepted the event; rejects on any failure. */
  forward(envelope: Uint8Array, namespace: string): Promise<void>;
  reset(): void;
}

const EVENTS_SERVICE = ServiceName.Events;

export function encodeForwardRequest(e: OutboxEvent): Uint8Array {
  const w = Writer.create();
  w.uint32(10).fork(); // ForwardRequest.envelope
  const t = unixTime({ at: new Date(e.at), nanos: e.atNanos });
  w.uint32(10).fork().uint32(8).int64(t.seconds).uint32(16).int32(t.nanos).ldelim();
  w.uint32(18).string(e.namespace);
  w.uint32(26).string(e.topic);
  w.uint32(34).fork().uint32(10).string(e.typeUrl).uint32(18).bytes(e.value).ldelim();
  w.ldelim();
  return w.finish();
}

/**
 * How long one Forward may wait for containerd's answer on a live connection. A busy or stopped
 * (SIGSTOP, paused VM) containerd still holds the request and handles it once it runs again;
 * giving up after a few seconds and re-sending on a new connection publishes the event twice (the
 * Go shim's 5 s does exactly that). A dead containerd closes the connection, which fails the call
 * at once, so a long limit costs nothing there.
 */
export const FORWARD_TIMEOUT_MS = 120_000;

const JOURNAL_WARNING_INTERVAL_MS = 60_000;

/** ttrpc client to containerd's TTRPC_ADDRESS, connected lazily and re-dialled after failures. */
export class TtrpcEventSender implements EventSender {
  private client: Promise<import('../ttrpc').Client> | null = null;
  /** The client once dialled: forward() then writes the request before it returns. */
  private connected: import('../ttrpc').Client | null = null;
  constructor(
    private address: string,
    private timeoutMs = FORWARD_TIMEOUT_MS
  ) {}
  /**
   * Dials containerd now rather than at the first event: the daemon calls this when it starts, so
   * TaskCreate does not wait for a connect on containerd's Create path. A failure is retried by forward.
   */
  preconnect(): void {
    this.connection().catch(() => {}); // forward dials again and reports its own failure
  }
  /**
   * On a live connection the request is written in this call, not a few promise turns later: an
   * event published in the middle of an RPC (/tasks/start in Start) goes out before the RPC's reply
   * and whatever else that turn does.
   */
  async forward(payload: Uint8Array, namespace: string): Promise<void> {
    const client = this.connected ?? (await this.connection());
    await client.call(EVENTS_SERVICE, 'Forward', payload, {
      timeoutMs: this.timeoutMs,
      metadata: { 'containerd-namespace-ttrpc': [namespace] },
    });
  }
  private async connection(): Promise<import('../ttrpc').Client> {
    if (!this.client) {
      const { Client } = await import('../ttrpc');
      if (this.client) return this.client;
      const p = Client.connect(this.address.replace(/^unix:\/\//, ''));
      this.client = p;
      p.then(
        (c) => {
          if (this.client === p) this.connected = c;
          c.on('close', () => {
            if (this.client !== p) return;
            this.client = null;
            this.connected = null;
          });
        },
        () => {
          if (this.client === p) this.client = null;
        }
      );
    }
    return this.client;
  }
  reset(): void {
    const c = this.client;
    this.client = null;
    this.connected = null;
    c?.then(
      (x) => x.close(),
      () => {}
    );
  }
}

/**
 * Append-only journal: `E <json>` lines for events, `A <seq>` lines for acknowledgements. Every
 * write either lands whole or throws (a short write on a full disk counts as a failure), so the
 * caller knows the file may be torn and rewrites it once writes work again.
 */
export class OutboxJournal {
  private fd = -1;
  private lines = 0;
  constructor(private file: string | null) {
    if (!file) return;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // O_NOFOLLOW: a symlink planted in the state dir must not make root append to another file.
    const { O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW } = fs.constants;
    this.fd = fs.openSync(file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | 0o2000000 /* O_CLOEXEC */, 0o600);
  }
  /** Events written by an earlier run of this journal and never acknowledged. */
  static load(file: string): OutboxEvent[] {
    let text = '';
    try {
      if (fs.lstatSync(file).isSymbolicLink()) return []; // not ours: never read through a planted link
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return [];
    } // no journal: a first run, or the previous one could not write it
    const events = new Map<number, OutboxEvent>();
    for (const line of text.split('\n')) {
      try {
        if (line.startsWith('E ')) {
          const j = JSON.parse(line.slice(2));
          events.set(j.seq, { ...j, value: Buffer.from(j.value, 'base64') });
        } else if (line.startsWith('A ')) events.delete(Number(line.slice(2)));
      } catch {
        /* a torn last line after a crash */
      }
    }
    return [...events.values()].sort((a, b) => a.seq - b.seq);
  }
  append(e: OutboxEvent): void {
    this.write(eventLine(e));
  }
  ack(seq: number, nothingPending: boolean): void {
    // Compact when the outbox is empty so the journal stays small.
    if (nothingPending && this.lines > 1000 && this.fd >= 0 && this.file) {
      fs.ftruncateSync(this.fd, 0);
      this.lines = 0;
      return;
    }
    this.write(`A ${seq}\n`);
  }
  /** Replaces the whole journal with exactly these pending events (catching up after failed writes). */
  rewrite(pending: readonly OutboxEvent[]): void {
    if (this.fd < 0) return;
    fs.ftruncateSync(this.fd, 0);
    this.lines = 0;
    for (const e of pending) this.write(eventLine(e));
  }
  private write(line: string): void {
    if (this.fd < 0) return;
    const buf = Buffer.from(line);
    const n = fs.writeSync(this.fd, buf);
    if (n !== buf.length) {
      throw Object.assign(new Error(`outbox journal: short write (${n} of ${buf.length} bytes)`), { code: 'ENOSPC' });
    }
    this.lines++;
  }
  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

function eventLine(e: OutboxEvent): string {
  return `E ${JSON.stringify({ ...e, value: Buffer.from(e.value).toString('base64') })}\n`;
}

/**
 * discarded: undelivered events of a previous shim on the same socket, dropped at start-up.
 * journalFailures: journal writes that failed (full or read-only state dir); the events were still sent.
 */
export interface PublisherStats {
  sent: number;
  pending: number;
  retries: number;
  discarded: number;
  journalFailures: number;
}

export class Publisher {
  private queue: OutboxEvent[] = [];
  private seq = 0;
  private running = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private wake: (() => void) | null = null;
  readonly stats: PublisherStats = { sent: 0, pending: 0, retries: 0, discarded: 0, journalFailures: 0 };
  /** The journal missed writes: it is rewritten from the queue at the next chance. */
  private journalBehind = false;
  private lastJournalWarning = -Infinity;
  /** In-place upgrade: no new Forward starts while held; `forwarding` is one in flight. */
  private held = false;
  private forwarding = false;
  private unheld: (() => void)[] = [];

  constructor(
    private sender: EventSender | null,
    private journal: OutboxJournal = new OutboxJournal(null),
    private log: Logger = nullLogger
  ) {}

  publish(namespace: string, topic: string, typeUrl: string, value: Uint8Array): void {
    if (this.closed) {
      this.log.warn('event after publisher close dropped', { topic });
      return;
    }
    const now = wallClockNow();
    const e: OutboxEvent = {
      seq: ++this.seq,
      namespace,
      topic,
      typeUrl,
      value,
      at: now.at.getTime(),
      atNanos: now.nanos,
    };
    // Queued before it is journalled: a journal that cannot be written costs durability, never delivery.
    this.queue.push(e);
    this.journalled(() => this.journal.append(e));
    this.kick();
  }

  pending(): OutboxEvent[] {
    return [...this.queue];
  }

  /**
   * In-place upgrade: starts no further Forward and resolves once none is in flight, so every
   * event is either delivered or still pending (handed over), never both.
   */
  async hold(): Promise<void> {
    this.held = true;
    while (this.forwarding) await new Promise((r) => setTimeout(r, 5));
  }

  release(): void {
    this.held = false;
    for (const r of this.unheld.splice(0)) r();
  }

  /** In-place upgrade: the events the previous process had not delivered (already in the journal). */
  adopt(events: OutboxEvent[]): void {
    for (const e of events) {
      this.queue.push(e);
      this.seq = Math.max(this.seq, e.seq);
    }
    if (events.length) this.kick();
  }

  /** Resolves when everything queued so far was delivered, or after timeoutMs. */
  drain(timeoutMs: number): Promise<boolean> {
    if (this.queue.length === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  close(): void {
    this.closed = true;
    this.wake?.();
    this.journal.close();
    this.sender?.reset();
  }

  /**
   * Runs one journal write; after a failure, the next call rewrites the journal from the queue
   * instead (the queue is the truth). The failure is logged when it starts and when it ends, not
   * per event: a full disk would otherwise fill the log with one line per event.
   */
  private journalled(write: () => void): void {
    try {
      if (this.journalBehind) {
        this.journal.rewrite(this.queue);
        this.journalBehind = false;
        this.log.debug('event journal writable again, caught up', { pending: this.queue.length });
      } else write();
    } catch (err) {
      this.stats.journalFailures++;
      // A nearly full disk flaps (a rewrite frees a page, the next line needs one): warn at most
      // once a minute; the metric counts every failure.
      const now = Date.now();
      if (!this.journalBehind && now - this.lastJournalWarning >= JOURNAL_WARNING_INTERVAL_MS) {
        this.lastJournalWarning = now;
        this.log.warn('event journal cannot be written: events are still sent, but not kept across a shim crash', {
          error: err,
        });
      }
      this.journalBehind = true;
    }
  }

  private kick(): void {
    this.stats.pending = this.queue.length;
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    let delay = 50;
    while (this.queue.length && !this.closed) {
      const e = this.queue[0];
      if (!this.sender) {
        this.queue.shift();
        this.journalled(() => this.journal.ack(e.seq, this.queue.length === 0));
        continue;
      }
      if (this.held) {
        await new Promise<void>((r) => this.unheld.push(r));
        continue;
      }
      try {
        this.forwarding = true;
        try {
          await this.sender.forward(encodeForwardRequest(e), e.namespace);
        } finally {
          this.forwarding = false;
        }
        this.queue.shift();
        this.stats.sent++;
        this.journalled(() => this.journal.ack(e.seq, this.queue.length === 0));
        delay = 50;
      } catch (err) {
        this.stats.retries++;
        if (delay === 50) this.log.warn('event not delivered yet, will retry', { topic: e.topic, error: err });
        this.sender.reset();
        if (this.journalBehind) this.journalled(() => {});
        await new Promise<void>((r) => {
          const t = setTimeout(r, delay);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.wake = null;
        delay = Math.min(delay * 2, 1000);
      }
      this.stats.pending = this.queue.length;
    }
    this.running = false;
    if (this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
  }
}
