// Faults through a real containerd: a full state dir loses no event, a hung or failing runtime
// fails within containerd's deadline and leaves no shim behind, an exec is STOPPED as soon as it
// is reaped. The shim must never log an unhandled rejection or uncaught exception.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { closeClients, collectEvents, getTask, killTask } from '../support/containerd-api';
import { ensureBusyboxImage } from '../support/rootfs';
import { daemonShims, removeContainer, runDetached, shimPidOf, shimSocketOf } from '../support/containers';
import { pidAlive } from '../support/proc';
import { sleep, until } from '../support/wait';

const FIXTURES = path.join(repoRoot(), 'test', 'fixtures');
const UNCAUGHT = /unhandled rejection|uncaught exception/;

let stateDir: string;
let c: Containerd;
let image: string;

before(async () => {
  // The shims' state dir (event journals, pid files, spare pools) on a tmpfs of its own, to fill up.
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-fullstate-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', stateDir]);
  assert.equal(m.status, 0, `mount tmpfs: ${m.stderr}`);
  c = await startContainerd({ logLevel: 'info', env: { TSSHIM_STATE_DIR: stateDir, TSSHIM_RUNC_TIMEOUT: '4s' } });
  image = await ensureBusyboxImage(c);
});

after(async () => {
  await c?.stop();
  if (stateDir) {
    spawnSync('umount', ['-l', stateDir]);
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
});

function noUncaughtErrors(d: Containerd): void {
  const bad = d
    .logTail(2_000_000)
    .split('\n')
    .filter((l) => UNCAUGHT.test(l));
  assert.deepEqual(bad, [], 'no unhandled rejection or uncaught exception in the shim log');
}

/** Fills the filesystem of `dir`: the returned function frees the space again. */
function fill(dir: string): () => void {
  const file = path.join(dir, 'filler');
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
  }
  // Small remainders too, so not even a short journal line fits.
  for (const n of [4096, 512, 64, 1]) {
    try {
      for (;;) fs.writeSync(fd, chunk.subarray(0, n));
    } catch {
      /* full */
    }
  }
  fs.closeSync(fd);
  return () => fs.rmSync(file, { force: true });
}

test('a full state dir loses no event: exec and kill while full, free the space, every exit arrives once and in order', async () => {
  const id = uniqueId('full');
  await runDetached(c, id, ['sleep', '100000'], { runtime: TSSHIM_RUNTIME, image });
  const events = await collectEvents(c, { filters: ['topic=="/tasks/exit"'] });
  const free = fill(stateDir);
  // ~800 journal bytes per exec: enough to need new tmpfs pages (a file may grow within its last page).
  const execs = Array.from({ length: 12 }, (_, i) => `x${i}`);
  let failedExecs = 0;
  try {
    for (const e of execs) {
      const r = await c.ctr(['task', 'exec', '--detach', '--exec-id', e, id, 'sleep', '100000']);
      if (r.code !== 0) {
        failedExecs++;
        console.log(`exec ${e} while full: ${r.stderr.trim()}`);
        continue;
      }
      await killTask(c, id, 9, { execId: e });
      // One at a time, so the order of the exits is the order of the kills.
      await until(async () => (await getTask(c, id, e)).status === 'STOPPED', `${e} stopped`, 20_000);
    }
    await sleep(1000);
    const whileFull = events.events.length;
    console.log(
      `while full: execs failed ${failedExecs}/${execs.length}, exits delivered ${whileFull}/${execs.length - failedExecs}`
    );
  } finally {
    free();
  }
  await killTask(c, id, 9);
  await events.waitFor((e) => e.event?.id === id, 20_000).catch(() => null);
  await sleep(500);
  events.stop();
  const exits = events.events.map((e) => e.event?.id as string);
  const expected = [...execs, id];
  const delivered = expected.filter((x) => exits.includes(x)).length;
  console.log(
    `after freeing: exits delivered ${delivered}, lost ${expected.length - delivered}, duplicates ${exits.length - new Set(exits).size}`
  );
  const warnings = c
    .logTail(2_000_000)
    .split('\n')
    .filter((l) => l.includes('event journal cannot be written'));
  assert.equal(warnings.length, 1, 'the journal failed (the fault was real) and it was logged once, not per event');
  assert.equal(failedExecs, 0, 'no Exec fails because the journal cannot be written');
  assert.deepEqual(exits, expected, 'every exit exactly once, in order');
  await removeContainer(c, id);
  noUncaughtErrors(c);
});

test('a runtime that never answers: Create fails at TSSHIM_RUNC_TIMEOUT naming the binary, the shim exits and removes its socket', async () => {
  const hang = path.join(FIXTURES, 'hang-runc', 'runc');
  const opts = path.join(c.dir, 'hang.toml');
  fs.writeFileSync(opts, `BinaryName = ${JSON.stringify(hang)}\n`);
  const id = uniqueId('hang');
  const t0 = Date.now();
  const ctr = c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--runtime-config-path', opts, image, id, 'true'], {
    timeoutMs: 120_000,
  });
  const socket: string = (await until(
    () => {
      try {
        return shimSocketOf(c, id);
      } catch {
        return null;
      }
    },
    'the shim socket',
    30_000
  ))!;
  const shims = [await shimPidOf(c, id)]; // asked over its socket: the daemon, not a transient `start`
  const r = await ctr;
  const took = Date.now() - t0;
  console.log(`hung runtime: ctr answered after ${took} ms: ${r.stderr.trim()}`);
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr,
    new RegExp(`runc create: ${hang.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} did not answer within 4s`)
  );
  assert.ok(took < 60_000, `answered at the configured deadline, not after 241 s (${took} ms)`);
  await until(
    () => shims.every((p) => !pidAlive(p)) && !fs.existsSync(socket),
    'the shim to exit and remove its socket',
    20_000
  );
  await c.ctr(['container', 'delete', id]);
  noUncaughtErrors(c);
});

test('a runtime that fails create (exit 1): no shim process and no socket file left', async () => {
  const fail = path.join(c.dir, 'fail-runc');
  fs.writeFileSync(fail, '#!/bin/sh\necho "fake runtime refuses" >&2\nexit 1\n', { mode: 0o755 });
  const opts = path.join(c.dir, 'fail.toml');
  fs.writeFileSync(opts, `BinaryName = ${JSON.stringify(fail)}\n`);
  const id = uniqueId('fail');
  const before = new Set(daemonShims(c));
  const ctr = c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--runtime-config-path', opts, image, id, 'true'], {
    timeoutMs: 60_000,
  });
  let socket: string | null = null;
  const watch = (async () => {
    while (!socket) {
      try {
        socket = shimSocketOf(c, id);
      } catch {
        await sleep(20);
      }
    }
  })();
  const r = await ctr;
  assert.notEqual(r.code, 0);
  await Promise.race([watch, sleep(100)]);
  await until(() => daemonShims(c).every((p) => before.has(p)), 'no shim of the failed create left', 20_000);
  if (socket) await until(() => !fs.existsSync(socket!), 'its socket removed', 20_000);
  await c.ctr(['container', 'delete', id]);
  noUncaughtErrors(c);
});

test('an exec is STOPPED as soon as it is reaped, while its exit waits for IO; Kill then answers NotFound', async () => {
  const id = uniqueId('ident');
  await runDetached(c, id, ['sleep', '100000'], { runtime: TSSHIM_RUNTIME, image });
  // The background sleep keeps the exec's stdout open: its exit event waits for the IO drain (2 s).
  const ctr = c.spawnCtr(['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'sleep 30 & exit 3']);
  try {
    const pid = await until(
      async () => {
        const t = await getTask(c, id, 'e1').catch(() => null);
        return t?.pid || null;
      },
      'the exec pid',
      20_000
    );
    await until(() => !fs.existsSync(`/proc/${pid}`), 'the exec reaped', { timeoutMs: 20_000, everyMs: 5 });
    const t = await getTask(c, id, 'e1');
    assert.equal(t.status, 'STOPPED', 'STOPPED right after the reap, not after the IO drain');
    assert.equal(t.exit_status, 3);
    await assert.rejects(killTask(c, id, 9, { execId: 'e1' }), /not found|already finished/i);
  } finally {
    ctr.kill('SIGKILL');
  }
  await removeContainer(c, id);
  noUncaughtErrors(c);
});

test("a hung runtime with containerd's deadline (ctr --timeout) and no TSSHIM_RUNC_TIMEOUT: the shim gives up at the deadline and exits", async () => {
  const d = await startContainerd({ logLevel: 'info' });
  try {
    const img = await ensureBusyboxImage(d);
    const hang = path.join(FIXTURES, 'hang-runc', 'runc');
    const opts = path.join(d.dir, 'hang.toml');
    fs.writeFileSync(opts, `BinaryName = ${JSON.stringify(hang)}\n`);
    const id = uniqueId('deadline');
    const ctr = d.ctr(
      ['--timeout', '8s', 'run', '-d', '--runtime', TSSHIM_RUNTIME, '--runtime-config-path', opts, img, id, 'true'],
      { timeoutMs: 120_000 }
    );
    const socket: string = (await until(
      () => {
        try {
          return shimSocketOf(d, id);
        } catch {
          return null;
        }
      },
      'the shim socket',
      30_000
    ))!;
    const shims = [await shimPidOf(d, id)];
    const r = await ctr;
    assert.notEqual(r.code, 0, 'ctr gave up');
    const t0 = Date.now();
    // Before: create hung 120 s, then delete --force another 120 s, and the shim never exited.
    await until(
      () => shims.every((p) => !pidAlive(p)) && !fs.existsSync(socket),
      'the shim to exit and remove its socket',
      45_000
    );
    console.log(`deadline: shim gone ${Date.now() - t0} ms after ctr gave up`);
    await d.ctr(['container', 'delete', id]);
    noUncaughtErrors(d);
  } finally {
    closeClients(d);
    await d.stop();
  }
});

test('containerd dies during a hung Create: the shim, left with no container and no connection, exits and removes its socket', async () => {
  const hang = path.join(FIXTURES, 'hang-runc', 'runc');
  const opts = path.join(c.dir, 'hang2.toml');
  fs.writeFileSync(opts, `BinaryName = ${JSON.stringify(hang)}\n`);
  const id = uniqueId('orphaned');
  const ctr = c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--runtime-config-path', opts, image, id, 'true'], {
    timeoutMs: 120_000,
  });
  const socket: string = (await until(
    () => {
      try {
        return shimSocketOf(c, id);
      } catch {
        return null;
      }
    },
    'the shim socket',
    30_000
  ))!;
  const shims = [await shimPidOf(c, id)]; // asked over its socket: the daemon, not a transient `start`
  await c.kill9();
  await ctr;
  // Nobody will ever send Shutdown: the closed connection is the only sign containerd lost interest.
  // The shim first gives up the hung create and its hung `delete --force` (bounded at 10 s,
  // cleanupTimeoutMs) before it can go; 60 s leaves room for that at CI load (30 s was missed at ~35).
  await until(
    () => shims.every((p) => !pidAlive(p)) && !fs.existsSync(socket),
    'the shim to exit and remove its socket',
    60_000
  );
  await c.restart();
  await c.ctr(['container', 'delete', id]);
  noUncaughtErrors(c);
});
