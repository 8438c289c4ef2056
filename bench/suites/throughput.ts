// 3. stdout throughput: N MiB written by `dd` in the container, read (a) by ctr into /dev/null and
// (b) straight from a fifo by `wc -c`, with the task created through containerd's gRPC API.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PATH_ENV_ARGS } from '../../test/support/rootfs';
import { type BenchEnv, type Side, SIDES, ctrToDevNull, mustCtr, newId, runArgs, runtimeOf } from '../lib/env';
import type { Results } from '../lib/results';
import { nowMs, rotate } from '../lib/stats';
import { callTasks } from '../../test/support/containerd-api';

const call = <T = any>(c: Parameters<typeof callTasks>[0], method: string, req: object) =>
  callTasks<T>(c, method, req, { timeoutMs: 120_000 });

const BLOCK = 64 * 1024;

function ddCommand(bytes: number): string[] {
  return ['dd', 'if=/dev/zero', `bs=${BLOCK}`, `count=${bytes / BLOCK}`];
}

/** `wc -c` on a fifo: resolves with the byte count it printed and when it ended. */
function fifoReader(fifo: string): Promise<{ bytes: number; endedAt: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'exec wc -c < "$0"', fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const endedAt = nowMs();
      if (code !== 0) reject(new Error(`wc -c on ${fifo} exited ${code}`));
      else resolve({ bytes: Number(out.trim()), endedAt });
    });
  });
}

async function direct(env: BenchEnv, side: Side, bytes: number, dir: string): Promise<number> {
  const c = env.main;
  const id = newId(`tp-${side}`);
  const fifo = path.join(dir, `${id}-stdout`);
  const errFifo = path.join(dir, `${id}-stderr`);
  for (const f of [fifo, errFifo]) {
    const r = spawn('mkfifo', [f]);
    await new Promise((res) => r.on('close', res));
  }
  await mustCtr(c, [
    'container',
    'create',
    '--runtime',
    runtimeOf(side),
    ...PATH_ENV_ARGS,
    '--rootfs',
    env.rootfs,
    id,
    ...ddCommand(bytes),
  ]);
  try {
    const reader = fifoReader(fifo);
    const errReader = fifoReader(errFifo); // dd's summary goes to stderr
    await call(c, 'Create', { container_id: id, stdout: fifo, stderr: errFifo, stdin: '', terminal: false });
    const exited = call(c, 'Wait', { container_id: id });
    const t0 = nowMs();
    await call(c, 'Start', { container_id: id });
    const { bytes: got, endedAt } = await reader;
    await exited;
    await errReader;
    await call(c, 'Delete', { container_id: id });
    if (got !== bytes) throw new Error(`${side}: fifo reader got ${got} bytes, expected ${bytes}`);
    return bytes / (1 << 20) / ((endedAt - t0) / 1000);
  } finally {
    await c.ctr(['container', 'delete', id]);
    fs.rmSync(fifo, { force: true });
    fs.rmSync(errFifo, { force: true });
  }
}

export async function throughputSuite(
  env: BenchEnv,
  results: Results,
  baselineMs: Record<Side, number>
): Promise<void> {
  const mib = env.quick ? 64 : 512;
  const bytes = mib << 20;
  const iterations = env.quick ? 2 : 4;
  const viaCtr: Record<Side, number[]> = { runc: [], tsshim: [] };
  const viaCtrRaw: Record<Side, number[]> = { runc: [], tsshim: [] };
  const viaFifo: Record<Side, number[]> = { runc: [], tsshim: [] };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-bench-fifo-'));
  try {
    for (let i = 0; i < iterations; i++) {
      for (const side of rotate(SIDES, i)) {
        const id = newId(`tc-${side}`);
        const r = await ctrToDevNull(env.main, runArgs(env, { side }, ['--rm'], id, ddCommand(bytes)));
        if (r.code !== 0) throw new Error(`ctr run (${side}) for throughput failed: ${r.stderr}`);
        viaCtrRaw[side].push(r.ms);
        // Without the container's own life cycle, measured separately in the run --rm suite.
        viaCtr[side].push(mib / (Math.max(1, r.ms - baselineMs[side]) / 1000));
      }
      for (const side of rotate(SIDES, i + 1)) viaFifo[side].push(await direct(env, side, bytes, dir));
      env.log(`  throughput: ${i + 1}/${iterations}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const target = { text: 'ratio >= 1.0', on: 'ratio' as const, op: '>=' as const, value: 1.0 };
  results.add({
    suite: 'stdout',
    name: `${mib} MiB through ctr to /dev/null`,
    unit: 'MiB/s',
    better: 'higher',
    runc: viaCtr.runc,
    tsshim: viaCtr.tsshim,
    target,
    note: 'wall time of ctr run --rm minus the median ctr run --rm /bin/true of the same runtime',
  });
  results.add({
    suite: 'stdout',
    name: `${mib} MiB through ctr, wall time`,
    unit: 'ms',
    runc: viaCtrRaw.runc,
    tsshim: viaCtrRaw.tsshim,
  });
  results.add({
    suite: 'stdout',
    name: `${mib} MiB to a fifo read by wc -c (no ctr)`,
    unit: 'MiB/s',
    better: 'higher',
    runc: viaFifo.runc,
    tsshim: viaFifo.tsshim,
    target,
    note: 'Tasks.Create over gRPC with our own fifos; timed from Tasks.Start to the reader seeing EOF',
  });
}
