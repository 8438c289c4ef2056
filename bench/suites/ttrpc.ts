// 6. ttrpc round trips per second on one connection: our client and server in one process, and our
// client against the shims' own sockets (containerd.task.v2.Task/Connect), runc's Go shim vs ours.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startContainerd } from '../../test/support/harness';
import { Client } from '../../src/ttrpc';
import { echoRoundTrips, measureCalls } from '../ttrpc-bench';
import { type BenchEnv, type Side, SIDES, newId, removeContainer, runSleeper } from '../lib/env';
import type { Results } from '../lib/results';
import { rotate } from '../lib/stats';

const TASK_SERVICE = 'containerd.task.v2.Task';

/** ConnectRequest { string id = 1 }, hand-encoded (ids are short ASCII). */
function connectRequest(id: string): Buffer {
  const b = Buffer.from(id);
  if (b.length > 127) throw new Error('id too long for the one-byte length');
  return Buffer.concat([Buffer.from([0x0a, b.length]), b]);
}

export async function ttrpcSuite(env: BenchEnv, results: Results): Promise<void> {
  const seconds = env.quick ? 1 : 3;
  const reps = env.quick ? 1 : 2;
  const inFlight = [1, 64];

  const echo = new Map<number, number[]>();
  for (let rep = 0; rep < reps; rep++) {
    for (const r of await echoRoundTrips(seconds, inFlight)) {
      const n = Number(/(\d+) in flight/.exec(r.name)![1]);
      if (!echo.has(n)) echo.set(n, []);
      echo.get(n)!.push(r.calls / r.seconds);
    }
  }
  for (const n of inFlight) {
    results.add({
      suite: 'ttrpc',
      name: `echo, our client -> our server, ${n} in flight`,
      mode: 'in-process',
      unit: 'calls/s',
      better: 'higher',
      tsshim: echo.get(n),
    });
  }

  // Info level: with -debug tsshim logs every rpc into containerd's log, which is not what a
  // round-trip measure is about.
  const c = await startContainerd({ namespace: 'bench', logLevel: 'info' });
  const ids: Record<Side, string> = { runc: newId('ttrpc-runc'), tsshim: newId('ttrpc-tsshim') };
  const clients: Partial<Record<Side, Client>> = {};
  try {
    for (const side of SIDES) {
      await runSleeper(env, c, { side }, ids[side]);
      const address = fs.readFileSync(path.join(c.bundleDir(ids[side]), 'address'), 'utf8').trim();
      clients[side] = await Client.connect(address.replace(/^unix:\/\//, ''));
      await measureCalls('warm-up', clients[side]!, 8, connectRequest(ids[side]), 'Connect', 0.3, TASK_SERVICE);
    }
    const rates = new Map<string, number[]>();
    for (let rep = 0; rep < reps; rep++) {
      for (const [k, n] of inFlight.entries()) {
        for (const side of rotate(SIDES, rep + k)) {
          const r = await measureCalls(
            `Connect ${n}`,
            clients[side]!,
            n,
            connectRequest(ids[side]),
            'Connect',
            seconds,
            TASK_SERVICE
          );
          const key = `${n}|${side}`;
          if (!rates.has(key)) rates.set(key, []);
          rates.get(key)!.push(r.calls / r.seconds);
        }
      }
    }
    for (const n of inFlight) {
      results.add({
        suite: 'ttrpc',
        name: `Task.Connect, our client -> shim socket, ${n} in flight`,
        mode: 'shim socket',
        unit: 'calls/s',
        better: 'higher',
        runc: rates.get(`${n}|runc`),
        tsshim: rates.get(`${n}|tsshim`),
      });
    }
  } finally {
    for (const side of SIDES) clients[side]?.close();
    for (const side of SIDES) await removeContainer(c, ids[side]);
    await c.stop();
  }
}
