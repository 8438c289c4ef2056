// ttrpc micro-benchmark on one unix-socket connection: unary round trips (1 and 64 in flight) with
// latency percentiles, and payload throughput with 1 MiB messages. Usage:
//   node dist/bench/ttrpc-bench.js [seconds-per-case=3]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Server } from '../src/ttrpc';

const SVC = 'bench.v1.Echo';

interface Result {
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

async function run(name: string, client: Client, inFlight: number, payload: Buffer, method: string, seconds: number): Promise<Result> {
  const latencies: number[] = [];
  let bytes = 0;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const reply = await client.call(SVC, method, payload);
      latencies.push(performance.now() - t);
      bytes += payload.length + reply.length;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { name, calls: latencies.length, seconds: elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), bytes };
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
  const small = Buffer.from('0a06636f6e7461696e65722d31', 'hex'); // ~13 bytes, a typical Task request
  try {
    await run('warm-up', client, 8, small, 'Echo', 0.5);
    const results = [
      await run('unary, 1 in flight', client, 1, small, 'Echo', seconds),
      await run('unary, 64 in flight', client, 64, small, 'Echo', seconds),
      await run('1 MiB echo, 1 in flight', client, 1, oneMiB, 'Echo', seconds),
      await run('1 MiB echo, 8 in flight', client, 8, oneMiB, 'Echo', seconds),
      await run('1 MiB upload, 8 in flight', client, 8, oneMiB, 'Sink', seconds),
      await run('1 MiB download, 8 in flight', client, 8, Buffer.alloc(0), 'Source', seconds),
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
    const fmt = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
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

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
