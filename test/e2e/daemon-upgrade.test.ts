// A containerd upgrade under running tsshim containers, as operators do it: stop the old daemon
// (by pid, SIGTERM: shims and containers keep running), start the new release on the same root and
// state dirs, and keep managing the containers the old daemon started: exec, a tty exec, stats,
// an exit that happens after the upgrade, kill, delete, and new containers beside them (joining the
// old group and per-node shims). 1.6.20 -> 2.3.4 and 2.2.7 -> 2.3.4; skipped (one line) where the
// release archives are missing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as pty from 'node-pty';
import {
  startContainerd,
  uniqueId,
  pidAlive,
  repoRoot,
  releaseMissing,
  TSSHIM_RUNTIME,
  type Containerd,
} from '../support/harness';
import { ensureBusyboxImage } from '../support/rootfs';
import { shimLeft, shimPidOf } from '../support/containers';

const GROUP = 'io.containerd.tsshim.v2.group';
const UPGRADES: [from: string, to: string][] = [
  ['apt', '2.3.4'],
  ['2.2.7', '2.3.4'],
];

const instances: Containerd[] = [];
after(async () => {
  for (const c of instances) await c.stop();
});

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function tasks(c: Containerd): Promise<Map<string, { pid: number; status: string }>> {
  const r = await c.ctr(['task', 'ls']);
  const out = new Map<string, { pid: number; status: string }>();
  for (const line of r.stdout.split('\n').slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id) out.set(id, { pid: Number(pid), status });
  }
  return out;
}

/** ctr on a pseudo-terminal (ctr -t needs one); resolves with its output and exit code. */
function ctrOnPty(c: Containerd, args: string[], timeoutMs = 30_000): Promise<{ out: string; code: number }> {
  const term = pty.spawn(c.ctrBinary, ['--address', c.address, '--namespace', c.namespace, ...args], {
    name: 'xterm',
    cols: 80,
    rows: 24,
    env: { ...process.env, CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS: '1' } as Record<string, string>,
  });
  let out = '';
  term.onData((d) => {
    out += d;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      try {
        term.kill('SIGKILL');
      } catch {
        /* gone */
      }
      reject(new Error(`ctr ${args.join(' ')} on a pty did not exit: ${JSON.stringify(out)}`));
    }, timeoutMs);
    term.onExit((e) => {
      clearTimeout(timer);
      resolve({ out, code: e.exitCode });
    });
  });
}

for (const [from, to] of UPGRADES) {
  const missing = releaseMissing(repoRoot(), from) ?? releaseMissing(repoRoot(), to);
  test(
    `daemon upgrade ${from === 'apt' ? '1.6 (apt)' : from} -> ${to} with running tsshim containers (detached, tty, grouped, per-node)`,
    { skip: missing ?? false },
    async (t) => {
      const c = await startContainerd({ release: from });
      instances.push(c);
      const fromVersion = c.release.version;
      const image = await ensureBusyboxImage(c);
      const perNodeToml = path.join(c.dir, 'per-node.toml');
      fs.writeFileSync(perNodeToml, 'PerNode = true\n');
      const group = uniqueId('grp');
      const id = {
        det: uniqueId('det'),
        exits: uniqueId('exits'),
        tty: uniqueId('tty'),
        g1: uniqueId('g1'),
        g2: uniqueId('g2'),
        pn1: uniqueId('pn1'),
        pn2: uniqueId('pn2'),
      };
      const run = async (cid: string, extra: string[], cmd: string[]): Promise<void> => {
        const r = await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, ...extra, image, cid, ...cmd], {
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 0, `${fromVersion}: ctr run ${cid}: ${r.stderr}\n${c.logTail(2000)}`);
      };
      await run(id.det, [], ['sleep', '1000']);
      await run(id.exits, [], ['sh', '-c', 'while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 5']);
      const tty = await ctrOnPty(c, ['run', '-d', '-t', '--runtime', TSSHIM_RUNTIME, image, id.tty, 'sh']);
      assert.equal(tty.code, 0, `ctr run -d -t: ${tty.out}`);
      for (const g of [id.g1, id.g2]) await run(g, ['--annotation', `${GROUP}=${group}`], ['sleep', '1000']);
      for (const p of [id.pn1, id.pn2]) await run(p, ['--runtime-config-path', perNodeToml], ['sleep', '1000']);
      assert.equal(await shimPidOf(c, id.g1), await shimPidOf(c, id.g2), 'one shim for the group');
      assert.equal(await shimPidOf(c, id.pn1), await shimPidOf(c, id.pn2), 'one per-node shim');
      const before = await tasks(c);
      const shims = new Map<string, number>();
      for (const cid of Object.values(id)) shims.set(cid, await shimPidOf(c, cid));

      // The upgrade: old daemon stopped by pid (SIGTERM), new release on the same dirs.
      const oldPid = c.pid;
      await c.restart({ release: to });
      assert.equal(pidAlive(oldPid), false);
      assert.equal(c.release.version, to);
      t.diagnostic(`${fromVersion} -> ${c.release.version}: containerd restarted on ${c.dir}`);

      // Every container the old daemon started is there, same pid, still served by the same shim.
      const now = await tasks(c);
      for (const cid of Object.values(id)) {
        assert.deepEqual(now.get(cid), before.get(cid), `${cid} after the upgrade: ${c.logTail(3000)}`);
        assert.equal(now.get(cid)?.status, 'RUNNING');
        assert.ok(pidAlive(shims.get(cid)!), `shim of ${cid} alive`);
      }
      // exec into each of them
      for (const cid of Object.values(id)) {
        const ex = await c.ctr(['task', 'exec', '--exec-id', 'up', cid, 'sh', '-c', `echo up-${cid}`]);
        assert.equal(ex.stdout, `up-${cid}\n`, `${cid}: ${ex.stderr}`);
      }
      // a tty exec into the tty container
      const tx = await ctrOnPty(c, ['task', 'exec', '-t', '--exec-id', 'tx', id.tty, 'sh', '-c', 'tty; exit 4']);
      assert.match(tx.out, /\/dev\/pts\/\d+/, tx.out);
      assert.equal(tx.code, 4);
      // stats
      const m = await c.ctr(['task', 'metrics', id.det]);
      assert.equal(m.code, 0, m.stderr);
      assert.match(m.stdout, /memory/i);
      // an exit after the upgrade arrives with its status
      const exitsPid = before.get(id.exits)!.pid;
      fs.writeFileSync(`/proc/${exitsPid}/root/tmp/go`, '');
      await waitFor(async () => (await tasks(c)).get(id.exits)?.status === 'STOPPED', `${id.exits} STOPPED`);
      const rmExits = await c.ctr(['task', 'rm', id.exits]);
      assert.equal(rmExits.code, 0, rmExits.stderr);
      assert.match(rmExits.stderr, /exit code 5/, 'the exit status reached the new daemon');

      // New containers beside them: a lone one, one joining the old group shim, one the per-node shim.
      const fresh = { lone: uniqueId('new'), g3: uniqueId('g3'), pn3: uniqueId('pn3') };
      await run(fresh.lone, [], ['sleep', '1000']);
      await run(fresh.g3, ['--annotation', `${GROUP}=${group}`], ['sleep', '1000']);
      await run(fresh.pn3, ['--runtime-config-path', perNodeToml], ['sleep', '1000']);
      assert.equal(
        await shimPidOf(c, fresh.g3),
        shims.get(id.g1),
        'the new group member joins the shim the old daemon started'
      );
      assert.equal(await shimPidOf(c, fresh.pn3), shims.get(id.pn1), 'the new container joins the old per-node shim');
      const rm = await c.ctr(
        ['run', '--rm', '--runtime', TSSHIM_RUNTIME, image, uniqueId('rm'), 'sh', '-c', 'echo new; exit 3'],
        { timeoutMs: 60_000 }
      );
      assert.equal(rm.stdout, 'new\n', rm.stderr);
      assert.equal(rm.code, 3);

      // kill and delete everything, old and new
      for (const cid of [...Object.values(id).filter((x) => x !== id.exits), ...Object.values(fresh)]) {
        const k = await c.ctr(['task', 'kill', '-s', 'KILL', cid]);
        assert.equal(k.code, 0, `kill ${cid}: ${k.stderr}`);
        await waitFor(async () => (await tasks(c)).get(cid)?.status === 'STOPPED', `${cid} STOPPED`);
        const d = await c.ctr(['task', 'rm', cid]);
        assert.equal(d.code, 0, `task rm ${cid}: ${d.stderr}`);
        assert.match(d.stderr, /exit code 137/);
      }
      for (const cid of [...Object.values(id), ...Object.values(fresh)]) {
        const d = await c.ctr(['container', 'rm', cid]);
        assert.equal(d.code, 0, `container rm ${cid}: ${d.stderr}`);
      }
      // The shims with no containers left exit (the per-node one stays by design).
      for (const cid of [id.det, id.tty, id.g1])
        await waitFor(() => shimLeft(shims.get(cid)!), `shim of ${cid} to exit`);
      assert.deepEqual([...(await tasks(c)).keys()], []);
    }
  );
}
