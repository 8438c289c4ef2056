// Survival through a real containerd 1.6: containerd killed -9 and restarted while containers exit
// (short version of test/stress/restart-stress.ts), shims killed -9 (image containers with overlay
// mounts, a group shim), grouping by annotation, and per-node mode with the sh fast path.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  startContainerd,
  uniqueId,
  repoRoot,
  containerdSearchPath,
  TSSHIM_RUNTIME,
  type Containerd,
} from '../support/harness';
import { closeClients, collectEvents, getTask } from '../support/containerd-api';
import { ensureBusyboxImage } from '../support/rootfs';
import { formatReport, runRestartScenario } from '../support/restart-scenario';
import { daemonShims, removeContainer, runDetached, shimPidOf, shimSocketOf } from '../support/containers';
import { listDir, mountsUnder, pidAlive, zombiesOf } from '../support/proc';
import { sleep, until } from '../support/wait';
import { groupLookupLine, PER_NODE_GROUP, shimGroupFile } from '../../src/shim/address';

const GROUP = 'io.containerd.tsshim.v2.group';
const started: Containerd[] = [];

async function containerd(env: Record<string, string> = {}): Promise<Containerd> {
  const c = await startContainerd({ logLevel: 'info', env });
  started.push(c);
  return c;
}

async function stop(c: Containerd): Promise<void> {
  closeClients(c);
  await c.stop();
}

after(async () => {
  for (const c of started) await stop(c).catch(() => {});
});

function assertScenarioClean(r: Awaited<ReturnType<typeof runRestartScenario>>): void {
  const figures = formatReport(r);
  console.log(figures);
  assert.equal(r.restarts, r.downtimesMs.length);
  assert.ok(r.exitsDuringDowntime > 0, 'some containers exited during downtimes');
  assert.equal(r.exitEventsDelivered, r.exitsDuringDowntime, figures);
  for (const k of [
    'lostEvents',
    'duplicateEvents',
    'wrongStates',
    'wrongExitStatus',
    'execsFailed',
    'zombies',
    'leakedShims',
    'leakedMounts',
    'leakedFiles',
  ] as const) {
    assert.equal(r[k], 0, `${k}: ${r.problems.join('\n')}`);
  }
  assert.deepEqual(r.problems, []);
}

test('containerd killed -9 three times while containers exit: every exit published once, states right, nothing leaks', async () => {
  const c = await containerd();
  const r = await runRestartScenario(c, {
    runtime: TSSHIM_RUNTIME,
    containers: 20,
    cycles: 3,
    execsPerCycle: 2,
    seed: Number(process.env.SURVIVAL_SEED ?? 4242),
    mode: 'single',
    downtimeMs: (cycle) => (cycle === 2 ? 5000 : 1500),
    eventWaitMs: 15_000,
    log: (m) => console.log(m),
  });
  assertScenarioClean(r);
  await stop(c);
});

test('the same with all containers in one group shim', async () => {
  const c = await containerd();
  const r = await runRestartScenario(c, {
    runtime: TSSHIM_RUNTIME,
    containers: 8,
    cycles: 2,
    execsPerCycle: 2,
    seed: 77,
    mode: 'group',
    downtimeMs: () => 1500,
    eventWaitMs: 15_000,
    log: (m) => console.log(m),
  });
  assert.equal(r.start.shims, 1, 'one shim for the group');
  assertScenarioClean(r);
  await stop(c);
});

test('containerd frozen (SIGSTOP) for 7 s while containers exit: each exit is published exactly once', async () => {
  // The Go shim gives up on a Forward after 5 s and sends it again: containerd then publishes both.
  const c = await containerd();
  const image = await ensureBusyboxImage(c);
  const events = await collectEvents(c);
  try {
    const ids = [uniqueId('frz'), uniqueId('frz'), uniqueId('frz')];
    const pids = await Promise.all(
      ids.map((id) => runDetached(c, id, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, image }))
    );
    process.kill(c.pid, 'SIGSTOP');
    try {
      for (const p of pids) process.kill(p, 'SIGKILL');
      await sleep(7000);
    } finally {
      process.kill(c.pid, 'SIGCONT');
    }
    for (const id of ids)
      await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id, 20_000);
    await sleep(2000); // a duplicate would follow within the retry back-off
    for (const id of ids) {
      const exits = events.events.filter((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
      assert.equal(exits.length, 1, `${id}: ${exits.length} exit events`);
      assert.equal(exits[0].event?.exit_status, 137);
    }
    for (const id of ids) await removeContainer(c, id);
  } finally {
    events.stop();
    await stop(c);
  }
});

test('kill -9 of the shim of image containers: exit 137 / persisted status, no process, mount or state left', async () => {
  const c = await containerd();
  const image = await ensureBusyboxImage(c);
  const events = await collectEvents(c);
  try {
    // A lone container, and a group of three of which one already exited with 5.
    const lone = uniqueId('lone');
    const group = [uniqueId('g'), uniqueId('g'), uniqueId('g')];
    const groupArgs = ['--annotation', `${GROUP}=${uniqueId('grp')}`];
    const pids = new Map<string, number>();
    pids.set(lone, await runDetached(c, lone, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, image }));
    for (const [i, id] of group.entries()) {
      pids.set(
        id,
        await runDetached(c, id, i === 0 ? ['sh', '-c', 'sleep 0.3; exit 5'] : ['sleep', '1000'], {
          runtime: TSSHIM_RUNTIME,
          image,
          extra: groupArgs,
        })
      );
    }
    await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === group[0]);
    const ids = [lone, ...group];
    const bundles = new Map(ids.map((id) => [id, c.bundleDir(id)]));
    for (const id of ids)
      assert.ok(mountsUnder(path.join(bundles.get(id)!, 'rootfs')).length > 0, `${id}: overlay rootfs mounted`);
    const shims = new Set(await Promise.all(ids.map((id) => shimPidOf(c, id))));
    assert.equal(shims.size, 2, 'the lone shim and the group shim');
    assert.equal(await shimPidOf(c, group[1]), await shimPidOf(c, group[2]));
    const sockets = new Set(ids.map((id) => shimSocketOf(c, id)));

    for (const pid of shims) process.kill(pid, 'SIGKILL');

    for (const id of ids) {
      const del = await events.waitFor((e) => e.topic === '/tasks/delete' && e.event?.container_id === id, 20_000);
      assert.equal(del.event?.exit_status, id === group[0] ? 5 : 137, `${id}: status after shim death`);
      if (id !== group[0]) {
        const exit = events.events.filter((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
        assert.equal(exit.length, 1, `${id}: one exit event`);
        assert.equal(exit[0].event?.exit_status, 137);
      }
      await until(() => !pidAlive(pids.get(id)!), `${id} init gone`);
      await until(() => !fs.existsSync(bundles.get(id)!), `${id} bundle removed`);
      assert.ok(!fs.existsSync(path.join('/run/containerd/runc', c.namespace, id)), `${id}: runc state left`);
    }
    assert.deepEqual(mountsUnder(c.state), [], 'no mount left under the state dir');
    const ls = await c.ctr(['task', 'ls']);
    for (const id of ids) assert.ok(!ls.stdout.includes(id), ls.stdout);
    for (const id of ids) assert.equal((await c.ctr(['container', 'delete', id])).code, 0);
    const snaps = await c.ctr(['snapshots', 'ls']);
    for (const id of ids) assert.ok(!snaps.stdout.includes(id), `snapshot of ${id} left: ${snaps.stdout}`);
    // A killed shim cannot clean up after itself: `delete` removes its socket and event outbox.
    for (const s of sockets) {
      assert.ok(!fs.existsSync(s), `socket ${s} of the dead shim left`);
      assert.deepEqual(
        listDir('/run/tsshim').filter((f) => f.startsWith(path.basename(s))),
        [],
        'outbox of the dead shim left'
      );
    }
    assert.deepEqual(daemonShims(c), []);
  } finally {
    events.stop();
    await stop(c);
  }
});

test('shims killed -9 while containerd is down: the restarted containerd cleans up, nothing is left', async () => {
  const c = await containerd();
  const image = await ensureBusyboxImage(c);
  const exited = uniqueId('down-exited');
  const running = uniqueId('down-running');
  const pids = new Map<string, number>();
  pids.set(
    exited,
    await runDetached(c, exited, ['sh', '-c', 'trap "exit 9" TERM; while :; do sleep 0.1; done'], {
      runtime: TSSHIM_RUNTIME,
      image,
    })
  );
  pids.set(running, await runDetached(c, running, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, image }));
  const ids = [exited, running];
  const shims = await Promise.all(ids.map((id) => shimPidOf(c, id)));
  const sockets = ids.map((id) => shimSocketOf(c, id));
  const bundles = ids.map((id) => c.bundleDir(id));
  await c.kill9();
  closeClients(c);
  process.kill(pids.get(exited)!, 'SIGTERM');
  await until(() => fs.existsSync(path.join(c.bundleDir(exited), 'init.exit')), 'the exit to be persisted');
  assert.equal(JSON.parse(fs.readFileSync(path.join(c.bundleDir(exited), 'init.exit'), 'utf8')).status, 9);
  // The exit event is now pending in the shim's outbox; the shim dies before it can deliver it.
  for (const pid of shims) process.kill(pid, 'SIGKILL');
  await until(() => shims.every((p) => !pidAlive(p)), 'shims dead');
  await c.restart();
  for (const [i, id] of ids.entries()) {
    await until(() => !pidAlive(pids.get(id)!), `${id} gone`);
    await until(() => !fs.existsSync(bundles[i]), `${id} bundle removed`);
    assert.ok(!fs.existsSync(sockets[i]), `${id}: socket of the dead shim left`);
    assert.deepEqual(
      listDir('/run/tsshim').filter((f) => f.startsWith(path.basename(sockets[i]))),
      [],
      `${id}: outbox left`
    );
  }
  const ls = await c.ctr(['task', 'ls']);
  for (const id of ids) assert.ok(!ls.stdout.includes(id), ls.stdout);
  for (const id of ids) assert.equal((await c.ctr(['container', 'delete', id])).code, 0);
  assert.deepEqual(mountsUnder(c.state), []);
  assert.deepEqual(daemonShims(c), []);
  // A new container with the same id starts clean: no stale event of its predecessor is replayed.
  const events = await collectEvents(c);
  try {
    await runDetached(c, exited, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, image });
    await sleep(1500);
    const stale = events.events.filter((e) => e.topic === '/tasks/exit' && e.event?.container_id === exited);
    assert.deepEqual(stale, [], 'no exit event for the fresh container');
    await removeContainer(c, exited);
  } finally {
    events.stop();
  }
  await stop(c);
});

test('an orphan storm (600 re-parented processes in a host-pid container) leaves no zombie under the shim', async () => {
  const c = await containerd();
  const image = await ensureBusyboxImage(c);
  const id = uniqueId('storm');
  const script = 'for i in $(seq 300); do (sleep 0.05 &); (true &); done; echo done > /tmp/storm; sleep 1000';
  await runDetached(c, id, ['sh', '-c', script], {
    runtime: TSSHIM_RUNTIME,
    image,
    extra: ['--with-ns', `pid:/proc/${process.pid}/ns/pid`],
  });
  const shim = await shimPidOf(c, id);
  const marker = path.join(c.bundleDir(id), 'rootfs', 'tmp', 'storm');
  await until(() => fs.existsSync(marker), 'the storm to finish', 60_000);
  await until(
    () => zombiesOf([shim]).length === 0,
    `no zombies under the shim (have ${zombiesOf([shim]).length})`,
    5000
  );
  const r = await c.ctr(['task', 'exec', '--exec-id', 'after', id, 'sh', '-c', 'echo alive']);
  assert.equal(r.stdout, 'alive\n', r.stderr);
  await removeContainer(c, id);
  await stop(c);
});

test('group annotation: one shim serves the group (later starts take the sh fast path) and exits after the last container is deleted', async () => {
  // No spares, so that every start the sh cannot answer itself shows up as a Node start.
  const counting = countingShimDir();
  const c = await containerd({
    TSSHIM_SPARES: '0',
    PATH: counting.path,
  });
  const image = await ensureBusyboxImage(c);
  const group = uniqueId('grp');
  const ids = Array.from({ length: 5 }, () => uniqueId('gm'));
  try {
    for (const id of ids)
      await runDetached(c, id, ['sleep', '1000'], {
        runtime: TSSHIM_RUNTIME,
        image,
        extra: ['--annotation', `${GROUP}=${group}`],
      });
    const shim = await shimPidOf(c, ids[0]);
    for (const id of ids) assert.equal(await shimPidOf(c, id), shim, `${id} in the group shim`);
    assert.deepEqual(daemonShims(c), [shim]);
    const starts = counting.nodeStarts().filter(answersStart);
    assert.equal(starts.length, 1, `only the group's first start boots Node: ${JSON.stringify(starts)}`);
    for (const id of ids) {
      const r = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', `echo ${id}`]);
      assert.equal(r.stdout, `${id}\n`, r.stderr);
    }
    const socket = shimSocketOf(c, ids[0]);
    // The daemon's hash-free lookup for the sh (src/shim/address.ts shimGroupFile) names it.
    const lookup = shimGroupFile(c.namespace, group);
    assert.equal(
      fs.readFileSync(lookup, 'utf8'),
      groupLookupLine(socket, shim, c.namespace, group, c.address),
      'the group lookup names the shim'
    );
    for (const [i, id] of ids.entries()) {
      await removeContainer(c, id);
      if (i < ids.length - 1) {
        assert.ok(pidAlive(shim), `group shim alive with ${ids.length - i - 1} container(s) left`);
        const next = ids[i + 1];
        assert.equal((await getTask(c, next)).status, 'RUNNING');
      }
    }
    await until(() => !pidAlive(shim), 'group shim to exit after its last container', 10_000);
    assert.deepEqual(zombiesOf([shim]), []);
    assert.ok(!fs.existsSync(socket), 'group socket removed');
    assert.ok(!fs.existsSync(lookup), 'group lookup removed');
    assert.ok(!listDir('/run/tsshim').some((f) => f.startsWith(path.basename(socket))), 'outbox removed');
    assert.deepEqual(mountsUnder(c.state), []);
  } finally {
    await stop(c);
  }
});

/** A shim wrapper that records every Node start of the shim (the sh fast path starts no Node). */
/** A Node process that answers a `start`: Node's own start, or the daemon of a cold start (a claim). */
const answersStart = (argv: string[]): boolean =>
  argv[argv.length - 1] === 'start' || argv[argv.length - 2] === 'claim';

function countingShimDir(): { dir: string; log: string; path: string; nodeStarts: () => string[][] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-count-'));
  const log = path.join(dir, 'node-runs.log');
  const marker = path.join(dir, 'marker.js');
  fs.writeFileSync(
    marker,
    `require('fs').appendFileSync(${JSON.stringify(log)}, JSON.stringify(process.argv.slice(2)) + '\\n');\n`
  );
  const wrapper = path.join(dir, 'containerd-shim-tsshim-v2');
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\nNODE_OPTIONS="--require ${marker}" exec ${path.join(repoRoot(), 'bin', 'containerd-shim-tsshim-v2')} "$@"\n`,
    { mode: 0o755 }
  );
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const nodeStarts = (): string[][] => {
    let text = '';
    try {
      text = fs.readFileSync(log, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as string[]);
  };
  // containerd's PATH: the counting wrapper first, so it is the containerd-shim-tsshim-v2 found.
  const searchPath = containerdSearchPath(dir);
  return { dir, log, path: searchPath, nodeStarts };
}

test('per-node mode: 20 runs share one shim, later starts take the sh fast path, exec/kill/delete work', async () => {
  const counting = countingShimDir();
  const c = await containerd({
    TSSHIM_PER_NODE: '1',
    PATH: counting.path,
  });
  const image = await ensureBusyboxImage(c);
  const ids: string[] = [];
  let shim = 0;
  for (let i = 0; i < 20; i++) {
    const id = uniqueId('pn');
    ids.push(id);
    if (i % 4 === 3) {
      // Foreground --rm runs come and go through the same shim.
      const r = await c.ctr(
        ['run', '--rm', '--runtime', TSSHIM_RUNTIME, image, id, 'sh', '-c', `echo run-${i}; exit ${i % 7}`],
        { timeoutMs: 60_000 }
      );
      assert.equal(r.stdout, `run-${i}\n`, r.stderr);
      assert.equal(r.code, i % 7);
    } else {
      await runDetached(c, id, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, image });
      if (!shim) shim = await shimPidOf(c, id);
      assert.equal(await shimPidOf(c, id), shim, `${id} served by the per-node shim`);
    }
    assert.deepEqual(daemonShims(c), [shim], `one shim after run ${i}`);
  }
  const starts = counting.nodeStarts().filter(answersStart);
  assert.equal(
    starts.length,
    1,
    `only the first start boots Node, the others use the sh fast path: ${JSON.stringify(starts)}`
  );
  const detached = ids.filter((_, i) => i % 4 !== 3);
  for (const id of detached.slice(0, 5)) {
    const r = await c.ctr(['task', 'exec', '--exec-id', 'x', id, 'sh', '-c', 'echo per-node; exit 3']);
    assert.equal(r.stdout, 'per-node\n', r.stderr);
    assert.equal(r.code, 3);
  }
  for (const id of detached) await removeContainer(c, id);
  assert.ok(pidAlive(shim), 'the per-node shim outlives its containers');
  assert.deepEqual(zombiesOf([shim]), []);
  assert.deepEqual(mountsUnder(c.state), []);
  // Stopping it the polite way removes its socket, pid file and outbox.
  const pidFiles = listDir('/run/tsshim').filter(
    (f) => f.endsWith('.pid') && fs.readFileSync(path.join('/run/tsshim', f), 'utf8').trim() === String(shim)
  );
  assert.equal(pidFiles.length, 1, 'per-node pid file for the fast path');
  const hash = pidFiles[0].replace(/\.pid$/, '');
  const lookup = shimGroupFile(c.namespace, PER_NODE_GROUP);
  assert.equal(fs.readFileSync(lookup, 'utf8').split(' ').slice(0, 2).join(' '), `${hash} ${shim}`, 'per-node lookup');
  process.kill(shim, 'SIGTERM');
  await until(() => !pidAlive(shim), 'per-node shim to stop on SIGTERM');
  assert.ok(!fs.existsSync(lookup), 'per-node lookup removed');
  assert.deepEqual(
    listDir('/run/tsshim').filter((f) => f.startsWith(hash)),
    []
  );
  await stop(c);
});

test('per_node = true in a runtime options file groups containers of a namespace', async () => {
  const c = await containerd();
  const image = await ensureBusyboxImage(c);
  const opts = path.join(c.dir, 'per-node.toml');
  fs.writeFileSync(opts, 'per_node = true\n');
  const ids = [uniqueId('po'), uniqueId('po'), uniqueId('po')];
  for (const id of ids)
    await runDetached(c, id, ['sleep', '1000'], {
      runtime: TSSHIM_RUNTIME,
      image,
      extra: ['--runtime-config-path', opts],
    });
  const shims = new Set(await Promise.all(ids.map((id) => shimPidOf(c, id))));
  assert.equal(shims.size, 1);
  for (const id of ids) await removeContainer(c, id);
  const [shim] = shims;
  assert.ok(pidAlive(shim));
  process.kill(shim, 'SIGTERM');
  await until(() => !pidAlive(shim), 'per-node shim to stop');
  await stop(c);
});
