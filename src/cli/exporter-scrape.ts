// One scrape of one shim over its ttrpc socket: Inspect (the shim's own counters and its containers)
// then one round of the Stats stream (each container's cgroup metrics), all within a deadline.
// Neither call is a Task API call, so neither counts as activity for the shim's idle collector.
import type { InspectReport } from './shim-client';
import { tsshim } from '../gen/proto';
import { Client, Code, TtrpcError } from '../ttrpc';
import { decodeStatsSample, SHIM_SERVICE, type StatsSampleMessage } from '../diag/introspection';

export interface ShimSnapshot {
  socket: string;
  /** The shim's Inspect JSON (pid, version, containers with bundles, events, rpc, memory, fds). */
  inspect: InspectReport;
  /** Latest stats sample per `namespace/id`. */
  samples: Map<string, StatsSampleMessage>;
}

/** A socket that is not a running tsshim shim: nobody listening, or another shim (runc's). */
export class NotTsshim extends Error {}

// Asked of the stream so that a round never runs twice: we stop after the first.
const STATS_ROUND_INTERVAL_MS = 60_000;

function withDeadline<T>(p: Promise<T>, deadline: number, what: string, onTimeout: () => void): Promise<T> {
  const ms = deadline - Date.now();
  if (ms <= 0) {
    onTimeout();
    return Promise.reject(new Error(`${what}: no answer in time`));
  }
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what}: no answer within the scrape timeout`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      }
    );
  });
}

const sampleKey = (namespace: string, id: string) => `${namespace}/${id}`;

/** Reads the Stats stream until every expected container was sampled once (or one repeats). */
async function oneStatsRound(client: Client, expected: Set<string>): Promise<Map<string, StatsSampleMessage>> {
  const samples = new Map<string, StatsSampleMessage>();
  if (expected.size === 0) return samples;
  const req = tsshim.v1.StatsStreamRequest.encode({ id: '', interval_ms: STATS_ROUND_INTERVAL_MS }).finish();
  let missing = expected.size;
  for await (const m of client.serverStream(SHIM_SERVICE, 'Stats', req)) {
    const s = decodeStatsSample(m);
    const key = sampleKey(s.namespace, s.id);
    if (samples.has(key)) break; // a second round began: a container went away meanwhile
    samples.set(key, s);
    if (expected.has(key) && --missing === 0) break;
  }
  return samples;
}

/**
 * Scrapes one candidate socket. Rejects with NotTsshim for sockets that are not tsshim shims, and
 * with an ordinary error for a tsshim shim that failed or did not answer before `deadline`.
 */
export async function scrapeShim(socket: string, deadline: number): Promise<ShimSnapshot> {
  let client: Client;
  try {
    client = await Client.connect(socket);
  } catch (e) {
    throw new NotTsshim(`${socket}: ${(e as Error).message}`);
  }
  const close = () => client.close();
  try {
    let inspect: InspectReport;
    try {
      const res = await withDeadline(
        client.call(SHIM_SERVICE, 'Inspect', tsshim.v1.InspectRequest.encode({}).finish()),
        deadline,
        'Inspect',
        close
      );
      inspect = JSON.parse(tsshim.v1.InspectResponse.decode(res).json);
    } catch (e) {
      if (e instanceof TtrpcError && e.code === Code.UNIMPLEMENTED) throw new NotTsshim(`${socket}: ${e.message}`);
      throw e;
    }
    const expected = new Set<string>();
    for (const c of inspect.containers ?? []) if (c.status !== 'stopped') expected.add(sampleKey(c.namespace, c.id));
    const samples = await withDeadline(oneStatsRound(client, expected), deadline, 'Stats', close);
    return { socket, inspect, samples };
  } finally {
    close();
  }
}
