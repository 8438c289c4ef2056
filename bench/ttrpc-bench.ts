// ttrpc micro-benchmark on one unix-socket connection: unary round trips (1 and 64 in flight) with
// latency percentiles, and payload throughput with 1 MiB messages. Usage:
//   node dist/bench/ttrpc-bench.js [seconds-per-case=3]
// `measureCalls` is also used by `npm run bench` (bench/suites/ttrpc.ts) against shim sockets.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Server } from '../src/ttrpc';

const SVC = 'bench.v1.Echo';
const SMALL = Buffer.from('0a06636f6e7461696e65722d31', 'hex'); // ~13 bytes, a typical Task request

export interface Result {
  name: string;
  calls: number;
  seconds: number;
  p50: number;
  p99: number;
  bytes: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;
}

/** Calls `service/method` with `inFlight` concurrent callers for `seconds` on one connection. */
export async function measureCalls(
  name: string,
  client: Client,
  inFlight: number,
  payload: Uint8Array,
  method: string,
  seconds: number,
  service = SVC
): Promise<Result> {
  const latencies: number[] = [];
  let bytes = 0;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const reply = await client.call(service, method, payload);
      latencies.push(performance.now() - t);
      bytes += payload.length + reply.length;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    name,
    calls: latencies.length,
    seconds: elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    bytes,
  };
}

/** Our client against our server in this process: unary round trips per second. */
export async function echoRoundTrips(seconds: number, inFlight: number[]): Promise<Result[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ttrpc-bench-'));
  const server = new Server();
  server.register(SVC, { Echo: (p) => p });
  await server.listen(join(dir, 'bench.sock'));
  const client = await Client.connect(join(dir, 'bench.sock'));
  try {
    await measureCalls('warm-up', client, 8, SMALL, 'Echo', 0.3);
    const out: Result[] = [];
    for (const n of inFlight) out.push(await measureCalls(`unary, ${n} in flight`, client, n, SMALL, 'Echo', seconds));
    return out;
  } finally {
    client.close();
    await server.shutdown(1000);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'ttrpc-bench-'));
  const path = join(dir, 'bench.sock');
  const server = new Server();
  const oneMiB = Buffer.alloc(1 << 20, 7);
  server.register(SVC, {
    Echo: (p) => p,
    Sink: () => Buffer.alloc(0),
    Source: () => oneMiB,
  });
  await server.listen(path);
  const client = await Client.connect(path);
  const small = SMALL;
  try {
    await measureCalls('warm-up', client, 8, small, 'Echo', 0.5);
    const results = [
      await measureCalls('unary, 1 in flight', client, 1, small, 'Echo', seconds),
      await measureCalls('unary, 64 in flight', client, 64, small, 'Echo', seconds),
      await measureCalls('1 MiB echo, 1 in flight', client, 1, oneMiB, 'Echo', seconds),
      await measureCalls('1 MiB echo, 8 in flight', client, 8, oneMiB, 'Echo', seconds),
      await measureCalls('1 MiB upload, 8 in flight', client, 8, oneMiB, 'Sink', seconds),
      await measureCalls('1 MiB download, 8 in flight', client, 8, Buffer.alloc(0), 'Source', seconds),
    ];
    const rows = results.map((r) => [
      r.name,
      (r.calls / r.seconds).toFixed(0),
      r.p50.toFixed(3),
      r.p99.toFixed(3),
      (r.bytes / r.seconds / (1 << 20)).toFixed(1),
    ]);
    const head = ['case', 'calls/s', 'p50 ms', 'p99 ms', 'MiB/s'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
    const fmt = (row: string[]) =>
      row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
    console.log(`ttrpc bench: node ${process.version}, ${seconds}s per case, one unix-socket connection`);
    console.log(fmt(head));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const row of rows) console.log(fmt(row));
  } finally {
    client.close();
    await server.shutdown(1000);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
