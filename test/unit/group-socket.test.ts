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
 * A process that claims the group of container `id` and reports `{ server, address }` on stdout;
 * it keeps what it got (a listening socket, when it won) until `exit()` closes its stdin, so that
 * every claimer of a round has claimed while the winner still lives, however slowly a loaded
 * machine boots them. With `starve`, its event loop is blocked for 300 ms once a connect has been
 * issued and the code that issued it has returned (its timeout armed): a process that gets no CPU
 * for a while, as under load, then sees its due timers before the connect's completion.
 */
function claimer(
  dir: string,
  id: string,
  opts: { starve?: boolean } = {}
): { claimed: Promise<{ server: boolean; address: string }>; exit: () => Promise<void> } {
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
        process.stdout.write(JSON.stringify({ server: !!c.server, address: c.address }) + '\\n');
        process.stdin.on('end', () => process.exit(0)).resume();
      });
  `;
  const p = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => p.once('exit', resolve));
  let out = '';
  const claimed = new Promise<{ server: boolean; address: string }>((resolve, reject) => {
    p.stdout.on('data', (d) => {
      out += d;
      if (out.endsWith('\n')) resolve(JSON.parse(out));
    });
    void exited.then((code) => reject(new Error(`claimer exited ${code} before it claimed`)));
  });
  return {
    claimed,
    exit: async () => {
      p.stdin.end();
      const code = await exited;
      if (code !== 0) throw new Error(`claimer exited ${code}`);
    },
  };
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
      const starved = claimer(dir, 'g1', { starve: true });
      const second = await starved.claimed;
      await starved.exit();
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
    for (let round = 0; round < 4; round++) {
      const claimers = Array.from({ length: 10 }, () => claimer(dir, 'g2'));
      const results = await Promise.all(claimers.map((c) => c.claimed));
      await Promise.all(claimers.map((c) => c.exit()));
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

test('group socket: a claim lock left by a start that died holding it is taken over; a fresh one is waited for', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-claim-'));
  try {
    const socket = socketPath('/run/x/containerd.sock', 'ns', 'g3', path.join(dir, 's'));
    const lock = path.join(path.dirname(socket), `.claim-${path.basename(socket)}`);
    fs.mkdirSync(lock, { recursive: true });
    const past = new Date(Date.now() - 60_000);
    fs.utimesSync(lock, past, past);
    const first = claimer(dir, 'g3');
    assert.equal((await first.claimed).server, true, 'the abandoned lock did not stop the claim');
    await first.exit();
    assert.equal(fs.existsSync(lock), false, 'and the lock is gone after it');

    fs.mkdirSync(lock); // held by a live start
    const second = claimer(dir, 'g3');
    let settled = false;
    void second.claimed.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 500)); // time to boot and reach the claim on a quiet machine
    assert.equal(settled, false, 'no claim while another start holds the lock');
    fs.rmdirSync(lock);
    assert.equal((await second.claimed).server, true, 'claimed once it was released (the socket was stale)');
    await second.exit();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
