// Claiming a group's socket (src/shim/start.ts claimGroupSocket), as concurrent starts of one group
// do: exactly one of them binds it, the others answer with its address. CI on a loaded machine
// (load ~20) found two shims serving one group, one of them never exiting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { claimGroupSocket } from '../../src/shim/start';
import { parseFlags } from '../../src/shim/flags';
import { socketPath } from '../../src/shim/address';

const startModule = path.resolve(__dirname, '../../src/shim/start.js');
const flagsModule = path.resolve(__dirname, '../../src/shim/flags.js');

/**
 * A process that claims the group of container `id` and reports `{ server }`, keeping what it got
 * for `holdMs`. With `starve`, its event loop is blocked for 300 ms once a connect has been issued
 * and the code that issued it has returned (its timeout armed): a process that gets no CPU for a
 * while, as under load, then sees its due timers before the connect's completion.
 */
function claimer(
  dir: string,
  id: string,
  opts: { starve?: boolean; holdMs?: number } = {}
): Promise<{ server: boolean; address: string }> {
  const bundle = fs.mkdtempSync(path.join(dir, 'bundle-'));
  const script = `
    const net = require('net');
    if (${!!opts.starve}) {
      const connect = net.connect;
      net.connect = (...a) => {
        const s = connect(...a);
        queueMicrotask(() => { const end = Date.now() + 300; while (Date.now() < end); });
        return s;
      };
    }
    const { claimGroupSocket } = require(${JSON.stringify(startModule)});
    const { parseFlags } = require(${JSON.stringify(flagsModule)});
    const flags = parseFlags(['-namespace', 'ns', '-id', ${JSON.stringify(id)}, '-address', '/run/x/containerd.sock', 'start']);
    claimGroupSocket(flags, { perNode: false, shimCgroup: '' }, ${JSON.stringify(bundle)}, ${JSON.stringify(path.join(dir, 's'))})
      .then((c) => {
        process.stdout.write(JSON.stringify({ server: !!c.server, address: c.address }));
        setTimeout(() => process.exit(0), ${opts.holdMs ?? 0});
      });
  `;
  const p = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`claimer exited ${code}`))));
  });
}

const connects = (socket: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

test("group socket: a start that gets no CPU while it checks the group's socket does not take a live shim's socket for stale", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-claim-'));
  try {
    const flags = parseFlags(['-namespace', 'ns', '-id', 'g1', '-address', '/run/x/containerd.sock', 'start']);
    const bundle = fs.mkdtempSync(path.join(dir, 'bundle-'));
    const first = await claimGroupSocket(flags, { perNode: false, shimCgroup: '' }, bundle, path.join(dir, 's'));
    assert.ok(first.server, 'the first start binds the group socket');
    try {
      const socket = socketPath('/run/x/containerd.sock', 'ns', 'g1', path.join(dir, 's'));
      const ino = fs.statSync(socket).ino;
      const second = await claimer(dir, 'g1', { starve: true });
      assert.deepEqual(second, { server: false, address: `unix://${socket}` }, 'the second finds the shim');
      assert.equal(fs.statSync(socket).ino, ino, "the group's socket is the first one's still");
      assert.ok(await connects(socket), 'and it answers');
    } finally {
      first.server!.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('group socket: of concurrent starts of one group exactly one binds it, the others get its address; a stale socket is replaced', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-claim-'));
  try {
    const socket = socketPath('/run/x/containerd.sock', 'ns', 'g2', path.join(dir, 's'));
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(Array.from({ length: 6 }, () => claimer(dir, 'g2', { holdMs: 1500 })));
      assert.equal(
        results.filter((r) => r.server).length,
        1,
        `round ${round}: one server of ${JSON.stringify(results)}`
      );
      assert.ok(
        results.every((r) => r.address === `unix://${socket}`),
        'all answer the group socket'
      );
      // The winner exited without closing (as a start hands its listener on): the socket is stale now.
      assert.equal(await connects(socket), false, 'stale once its process is gone');
    }
    assert.deepEqual(
      fs.readdirSync(path.join(dir, 's')).filter((n) => n.startsWith('.')),
      [],
      'no private bind or stale names left'
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
