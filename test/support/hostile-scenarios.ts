// Hostile same-uid clients against one shim socket (issue 14): partial frames held open, replies never
// read, masses of pending Waits, a huge deeply nested exec spec. Each attack runs while a second
// client calls State in a loop; we record the shim's RSS before / at peak / after (once the shim went
// idle and its idle collector ran) and the longest stall of that second client's calls.
import * as net from 'node:net';
import { Client, MessageType } from '../../src/ttrpc';
import { encodeFrame } from '../../src/ttrpc/channel';
import { encodeRequest } from '../../src/ttrpc/codec';
import { containerd as api } from '../../src/gen/proto';
import { TASK_SERVICE } from './containers';
import { anonRssBytes, pidAlive } from './proc';
import { sleep } from './wait';

const T = api.task.v2;

export interface Target {
  socket: string;
  namespace: string;
  /** A running container of that shim; the probe asks its State, Waits wait for it. */
  containerId: string;
  shimPid: number;
}

/** rss*: anonymous resident memory (RssAnon): what the attack made the shim hold, without code pages. */
export interface AttackReport {
  name: string;
  rssBefore: number;
  rssPeak: number;
  rssAfter: number;
  /** Seconds after the attack ended until RSS was within 20% of before (-1: not within the wait). */
  secondsToRecover: number;
  /** Longest time one State call of the other connection took during the attack. */
  longestStallMs: number;
  probeCalls: number;
  probeErrors: string[];
  shimAlive: boolean;
  /** What the attacker saw (errors, how far it got). */
  detail: string;
  /** The same as figures, for assertions (attack specific). */
  stats: Record<string, number | string>;
}

export interface AttackRun {
  detail: string;
  stats: Record<string, number | string>;
  end: () => Promise<void> | void;
}

const NS_KEY = 'containerd-namespace-ttrpc';
/** The idle collector waits 1.5 s of quiet; give it time to run and trim. */
const SETTLE_MS = 5000;
/** Longest extra wait after SETTLE_MS for RSS to come back. */
const RECOVERY_MAX_MS = 30_000;

function requestFrame(target: Target, streamId: number, method: string, payload: Uint8Array): Buffer {
  const body = encodeRequest({
    service: TASK_SERVICE,
    method,
    payload: Buffer.from(payload),
    metadata: [{ key: NS_KEY, value: target.namespace }],
  });
  return encodeFrame(streamId, MessageType.REQUEST, 0, body);
}

function connectRaw(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Writes `data`; resolves true when written, false when the peer stopped reading for `stallMs` or closed. */
function writeOrStall(s: net.Socket, data: Buffer, stallMs = 2000): Promise<boolean> {
  if (s.destroyed) return Promise.resolve(false);
  if (s.write(data)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.off('drain', onDrain);
      s.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const t = setTimeout(() => done(false), stallMs);
    s.on('drain', onDrain);
    s.on('close', onClose);
  });
}

/** Samples RSS every 50 ms and runs State calls back to back on a connection of its own. */
class Observer {
  peak = 0;
  longestStallMs = 0;
  calls = 0;
  errors: string[] = [];
  private stopped = false;
  private sampler: NodeJS.Timeout;
  private loop: Promise<void>;

  constructor(
    private readonly target: Target,
    private readonly client: Client
  ) {
    this.sampler = setInterval(() => {
      this.peak = Math.max(this.peak, anonRssBytes(target.shimPid));
    }, 50);
    this.loop = this.probe();
  }

  private async probe(): Promise<void> {
    const req = T.StateRequest.encode({ id: this.target.containerId }).finish();
    while (!this.stopped) {
      const t0 = Date.now();
      try {
        await this.client.call(TASK_SERVICE, 'State', req, {
          timeoutMs: 120_000,
          metadata: { [NS_KEY]: [this.target.namespace] },
        });
      } catch (e) {
        if (this.errors.length < 5) this.errors.push((e as Error).message);
      }
      this.calls++;
      this.longestStallMs = Math.max(this.longestStallMs, Date.now() - t0);
      await sleep(5);
    }
  }

  async stopProbe(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  async stop(): Promise<void> {
    await this.stopProbe();
    clearInterval(this.sampler);
    this.peak = Math.max(this.peak, anonRssBytes(this.target.shimPid));
  }
}

/** Runs `attack` (which returns a detail line and a function that ends it) with the observer around it. */
export async function runAttack(target: Target, name: string, attack: () => Promise<AttackRun>): Promise<AttackReport> {
  const probeClient = await Client.connect(target.socket);
  try {
    await sleep(SETTLE_MS); // the shim is quiet: its idle collection ran
    const rssBefore = anonRssBytes(target.shimPid);
    const obs = new Observer(target, probeClient);
    let detail = '';
    let stats: AttackRun['stats'] = {};
    try {
      const r = await attack();
      detail = r.detail;
      stats = r.stats;
      await sleep(500);
      // The other client goes quiet first, as a shim's clients do between calls: whatever the shim
      // does after the attack ends must come from the attack's end itself.
      await obs.stopProbe();
      await sleep(SETTLE_MS / 2);
      await r.end();
      await sleep(SETTLE_MS);
    } finally {
      await obs.stop();
    }
    // V8 finishes freeing (concurrent sweeping, its memory reducer) some seconds after the idle
    // collection: wait for RSS to come back within 20%, bounded.
    const recoveryStart = Date.now();
    let rssAfter = anonRssBytes(target.shimPid);
    while (rssAfter > rssBefore * 1.2 && Date.now() - recoveryStart < RECOVERY_MAX_MS) {
      await sleep(500);
      rssAfter = anonRssBytes(target.shimPid);
    }
    return {
      name,
      rssBefore,
      rssPeak: obs.peak,
      rssAfter,
      longestStallMs: obs.longestStallMs,
      secondsToRecover: rssAfter <= rssBefore * 1.2 ? (SETTLE_MS + Date.now() - recoveryStart) / 1000 : -1,
      probeCalls: obs.calls,
      probeErrors: obs.errors,
      shimAlive: pidAlive(target.shimPid),
      detail,
      stats,
    };
  } finally {
    probeClient.close();
  }
}

/** `connections` sockets each send a frame header announcing `frameBytes` and all but its last byte. */
export function partialFrames(target: Target, connections: number, frameBytes = 4 << 20) {
  return async (): Promise<AttackRun> => {
    const socks: net.Socket[] = [];
    let closedByShim = 0;
    const header = Buffer.alloc(10);
    header.writeUInt32BE(frameBytes, 0);
    header.writeUInt32BE(1, 4);
    header[8] = MessageType.REQUEST;
    const body = Buffer.alloc(frameBytes - 1, 0x41);
    await Promise.all(
      Array.from({ length: connections }, async () => {
        const s = await connectRaw(target.socket);
        s.on('error', () => {});
        s.on('close', () => closedByShim++);
        socks.push(s);
        await writeOrStall(s, Buffer.concat([header, body]));
      })
    );
    await sleep(500);
    return {
      detail: `${connections} connections x ${frameBytes} B partial frame; ${closedByShim} closed by the shim while holding`,
      stats: { closedByShim },
      end: () => {
        for (const s of socks) s.destroy();
      },
    };
  };
}

/** One connection pipelines `requests` State calls and never reads a reply. */
export function unreadReplies(target: Target, requests: number, connections = 1) {
  return async (): Promise<AttackRun> => {
    const socks: net.Socket[] = [];
    let sent = 0;
    let stalled = 0;
    const perConn = Math.ceil(requests / connections);
    const payload = T.StateRequest.encode({ id: target.containerId }).finish();
    await Promise.all(
      Array.from({ length: connections }, async () => {
        const s = await connectRaw(target.socket);
        s.on('error', () => {});
        s.pause(); // never read
        socks.push(s);
        let id = 1;
        for (let done = 0; done < perConn;) {
          const n = Math.min(1000, perConn - done);
          const frames: Buffer[] = [];
          for (let i = 0; i < n; i++, id += 2) frames.push(requestFrame(target, id, 'State', payload));
          if (!(await writeOrStall(s, Buffer.concat(frames)))) {
            stalled++;
            break;
          }
          done += n;
          sent += n;
        }
      })
    );
    return {
      detail: `${sent}/${requests} requests written on ${connections} connection(s); ${stalled} connection(s) stopped being read by the shim`,
      stats: { sent, stalled },
      end: () => {
        for (const s of socks) s.destroy();
      },
    };
  };
}

/** `calls` Wait requests on the running container, spread over `connections` connections. */
export function pendingWaits(target: Target, calls: number, connections = 1) {
  return async (): Promise<AttackRun> => {
    const socks: net.Socket[] = [];
    let exhausted = 0;
    const payload = T.WaitRequest.encode({ id: target.containerId }).finish();
    const perConn = Math.ceil(calls / connections);
    await Promise.all(
      Array.from({ length: connections }, async () => {
        const s = await connectRaw(target.socket);
        s.on('error', () => {});
        // Replies (refusals) are read and counted roughly by their status text.
        s.on('data', (d: Buffer) => {
          exhausted += countOf(d, 'too many');
        });
        socks.push(s);
        let id = 1;
        for (let done = 0; done < perConn;) {
          const n = Math.min(1000, perConn - done);
          const frames: Buffer[] = [];
          for (let i = 0; i < n; i++, id += 2) frames.push(requestFrame(target, id, 'Wait', payload));
          if (!(await writeOrStall(s, Buffer.concat(frames)))) break;
          done += n;
        }
      })
    );
    await sleep(1000);
    return {
      detail: `${calls} Waits on ${connections} connection(s); ~${exhausted} refused as too many`,
      stats: { refused: exhausted },
      end: () => {
        for (const s of socks) s.destroy();
      },
    };
  };
}

function countOf(buf: Buffer, needle: string): number {
  let n = 0;
  for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) n++;
  return n;
}

/** An Exec whose process spec is `bytes` of nested arrays, then its Start. */
export function deepExecSpec(target: Target, bytes: number) {
  return async (): Promise<AttackRun> => {
    const client = await Client.connect(target.socket);
    const md = { [NS_KEY]: [target.namespace] };
    const execId = `deep-${process.pid}-${Date.now()}`;
    const half = Math.floor(bytes / 2);
    const value = Buffer.from('['.repeat(half) + ']'.repeat(half));
    const outcome: string[] = [];
    const t0 = Date.now();
    try {
      await client.call(
        TASK_SERVICE,
        'Exec',
        T.ExecProcessRequest.encode({
          id: target.containerId,
          exec_id: execId,
          spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value },
        }).finish(),
        { timeoutMs: 120_000, metadata: md }
      );
      outcome.push('Exec ok');
      await client.call(
        TASK_SERVICE,
        'Start',
        T.StartRequest.encode({ id: target.containerId, exec_id: execId }).finish(),
        { timeoutMs: 120_000, metadata: md }
      );
      outcome.push('Start ok');
    } catch (e) {
      outcome.push(`failed: ${(e as Error).message.slice(0, 160)}`);
    }
    outcome.push(`after ${Date.now() - t0} ms`);
    return {
      detail: `${bytes} B nested exec spec: ${outcome.join('; ')}`,
      stats: { outcome: outcome.join('; ') },
      end: () => client.close(),
    };
  };
}

export function formatReport(r: AttackReport): string {
  const mib = (b: number) => (b / 1048576).toFixed(1);
  return (
    `${r.name}: RssAnon ${mib(r.rssBefore)} -> peak ${mib(r.rssPeak)} -> after ${mib(r.rssAfter)} MiB (${r.secondsToRecover >= 0 ? `within 20% ${r.secondsToRecover.toFixed(1)} s after the end` : 'NOT back within 20%'}); ` +
    `longest stall of another connection ${r.longestStallMs} ms (${r.probeCalls} calls, ${r.probeErrors.length} errors` +
    `${r.probeErrors.length ? `: ${r.probeErrors[0]}` : ''}); shim ${r.shimAlive ? 'alive' : 'DEAD'}\n  ${r.detail}`
  );
}
