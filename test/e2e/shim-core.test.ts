// The shim core through a real containerd 1.6 and runc: `ctr run --runtime io.containerd.tsshim.v2`.
// Where the right answer is not obvious the same scenario runs with io.containerd.runc.v2 too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { startContainerd, uniqueId, pidAlive, RUNC_RUNTIME, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { collectEvents, getTask, type EventCollector } from '../support/containerd-api';
import { zombiesOf } from '../support/proc';
import { shimPidOf } from '../support/containers';
import { until } from '../support/wait';

let c: Containerd;
let rootfs: string;
let events: EventCollector;

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
  events = await collectEvents(c);
});
after(async () => {
  events?.stop();
  await c?.stop();
});

const run = (runtime: string, id: string, cmd: string[], extra: string[] = [], opts = {}) =>
  c.ctr(['run', '--rm', '--runtime', runtime, ...PATH_ENV_ARGS, ...extra, '--rootfs', rootfs, id, ...cmd], {
    timeoutMs: 60_000,
    ...opts,
  });

test('run --rm echo prints the output and exits 0', async () => {
  const r = await run(TSSHIM_RUNTIME, uniqueId('echo'), ['echo', 'hello from tsshim']);
  assert.equal(r.stdout, 'hello from tsshim\n', `stderr: ${r.stderr}\n${c.logTail(4000)}`);
  assert.equal(r.code, 0);
});

test('exit code 42 is reported like runc.v2 does', async () => {
  for (const runtime of [RUNC_RUNTIME, TSSHIM_RUNTIME]) {
    const r = await run(runtime, uniqueId('exit'), ['sh', '-c', 'exit 42']);
    assert.equal(r.code, 42, `${runtime}: ${r.stderr}`);
  }
});

test('stdout and stderr stay separate', async () => {
  const r = await run(TSSHIM_RUNTIME, uniqueId('split'), ['sh', '-c', 'echo out; echo err >&2; echo out2']);
  assert.equal(r.stdout, 'out\nout2\n');
  assert.equal(r.stderr, 'err\n');
});

test('a process that opens /dev/stdout itself works', async () => {
  const r = await run(TSSHIM_RUNTIME, uniqueId('devstdout'), ['sh', '-c', 'echo via-dev > /dev/stdout']);
  assert.equal(r.stdout, 'via-dev\n', r.stderr);
});

test('stdin is piped through cat and its EOF ends the container', async () => {
  const input = 'line one\nline two\n'.repeat(1000);
  const r = await run(TSSHIM_RUNTIME, uniqueId('cat'), ['cat'], [], { input, closeStdinAfterOutput: input.length });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, input);
});

test('64 MiB of output arrive intact', async () => {
  const size = 64 * 1024 * 1024;
  const r = await run(TSSHIM_RUNTIME, uniqueId('big'), ['sh', '-c', `yes 0123456789abcdef | head -c ${size}`], [], {
    timeoutMs: 120_000,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, size);
  const expected = createHash('sha256')
    .update(Buffer.from('0123456789abcdef\n'.repeat(size / 17 + 1)).subarray(0, size))
    .digest('hex');
  assert.equal(createHash('sha256').update(r.stdout).digest('hex'), expected);
});

test('8 MiB printed right before exit is not lost', async () => {
  const size = 8 * 1024 * 1024;
  const r = await run(TSSHIM_RUNTIME, uniqueId('burst'), [
    'sh',
    '-c',
    `head -c ${size} /dev/zero | tr '\\0' x; exit 5`,
  ]);
  assert.equal(r.code, 5);
  assert.equal(r.stdout.length, size);
});

test('detached run: task ls RUNNING with pid, kill, STOPPED, delete', async () => {
  const id = uniqueId('detached');
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--rootfs',
    rootfs,
    id,
    'sh',
    '-c',
    'trap "exit 7" TERM; while :; do sleep 0.1; done',
  ]);
  assert.equal(r.code, 0, r.stderr + c.logTail(3000));
  const ls = await c.ctr(['task', 'ls']);
  const line = ls.stdout.split('\n').find((l) => l.startsWith(id + ' '));
  assert.ok(line, ls.stdout);
  const [, pid, status] = line!.trim().split(/\s+/);
  assert.equal(status, 'RUNNING');
  assert.ok(pidAlive(Number(pid)));
  assert.equal((await c.ctr(['task', 'kill', id])).code, 0);
  const exit = await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
  assert.equal(exit.event?.exit_status, 7);
  const t = await getTask(c, id);
  assert.equal(t.status, 'STOPPED');
  assert.equal(t.exit_status, 7);
  assert.equal((await c.ctr(['task', 'delete', id])).code, 0);
  assert.equal((await c.ctr(['container', 'delete', id])).code, 0);
  assert.ok(!pidAlive(Number(pid)));
});

test('exec: output, exit codes, 50 sequential and 20 concurrent', async () => {
  const id = uniqueId('exec');
  assert.equal(
    (await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, '--rootfs', rootfs, id, 'sleep', '1000']))
      .code,
    0
  );
  try {
    const one = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'echo exec-out; exit 9']);
    assert.equal(one.stdout, 'exec-out\n');
    assert.equal(one.code, 9);
    for (let i = 0; i < 50; i++) {
      const r = await c.ctr(['task', 'exec', '--exec-id', `s${i}`, id, 'sh', '-c', `echo ${i}; exit ${i % 7}`]);
      assert.equal(r.stdout, `${i}\n`, `exec ${i}: ${r.stderr}`);
      assert.equal(r.code, i % 7);
    }
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        c.ctr(['task', 'exec', '--exec-id', `c${i}`, id, 'sh', '-c', `echo c${i}; exit ${i % 5}`])
      )
    );
    many.forEach((r, i) => {
      assert.equal(r.stdout, `c${i}\n`, `concurrent exec ${i}: ${r.stderr}`);
      assert.equal(r.code, i % 5);
    });
    // The daemon's V8 makes no machine code (--jitless, src/shim/node-flags.ts): after 71 execs,
    // still no memory that is both writable and executable.
    const shim = await shimPidOf(c, id);
    const wx = fs
      .readFileSync(`/proc/${shim}/maps`, 'utf8')
      .split('\n')
      .filter((l) => /^\S+ .wx/.test(l));
    assert.deepEqual(wx, [], `writable and executable mappings of shim ${shim}`);
  } finally {
    await c.ctr(['task', 'kill', '-s', 'KILL', id]);
    await until(async () => (await getTask(c, id)).status === 'STOPPED', 'stopped');
    await c.ctr(['task', 'delete', id]);
    await c.ctr(['container', 'delete', id]);
  }
});

test('events arrive in containerd order, exec exit before init exit', async () => {
  const id = uniqueId('order');
  assert.equal(
    (
      await c.ctr([
        'run',
        '-d',
        '--runtime',
        TSSHIM_RUNTIME,
        ...PATH_ENV_ARGS,
        '--rootfs',
        rootfs,
        id,
        'sh',
        '-c',
        'trap "exit 3" TERM; while :; do sleep 0.1; done',
      ])
    ).code,
    0
  );
  const ex = await c.ctr(['task', 'exec', '--exec-id', 'e2', id, 'sh', '-c', 'exit 7']);
  assert.equal(ex.code, 7);
  await c.ctr(['task', 'kill', id]);
  await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.id === id);
  await c.ctr(['task', 'delete', id]);
  await events.waitFor((e) => e.topic === '/tasks/delete' && e.event?.container_id === id);
  const seen = events.events
    .filter((e) => e.event?.container_id === id)
    .map((e) => e.topic + (e.event?.id && e.topic === '/tasks/exit' ? `:${e.event.id}` : ''));
  assert.deepEqual(seen, [
    '/tasks/create',
    '/tasks/start',
    '/tasks/exec-added',
    '/tasks/exec-started',
    `/tasks/exit:e2`,
    `/tasks/exit:${id}`,
    '/tasks/delete',
  ]);
  const exit = events.events.find((e) => e.topic === '/tasks/exit' && e.event?.id === id)!;
  const del = events.events.find((e) => e.topic === '/tasks/delete' && e.event?.container_id === id)!;
  assert.equal(exit.event?.exit_status, 3);
  assert.equal(del.event?.exit_status, 3);
  assert.equal(del.event?.pid, exit.event?.pid);
  await c.ctr(['container', 'delete', id]);
});

test('orphans of a host-pid-namespace container are reaped by the shim: no zombie', async () => {
  const id = uniqueId('orphans');
  const script = 'for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.1 &) ; (true &) ; done; sleep 1000';
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--with-ns',
    `pid:/proc/${process.pid}/ns/pid`,
    '--rootfs',
    rootfs,
    id,
    'sh',
    '-c',
    script,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const shimPid = Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
  await new Promise((res) => setTimeout(res, 1500));
  assert.deepEqual(zombiesOf(shimPid), [], 'zombies parented to the shim');
  await c.ctr(['task', 'kill', '-s', 'KILL', id]);
  await until(async () => (await getTask(c, id)).status === 'STOPPED', 'stopped');
  await c.ctr(['task', 'delete', id]);
  await c.ctr(['container', 'delete', id]);
});

test('kill -9 of the shim: containerd runs `delete`, container gone, task reported stopped', async () => {
  const id = uniqueId('shimkill');
  assert.equal(
    (await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, '--rootfs', rootfs, id, 'sleep', '1000']))
      .code,
    0
  );
  const t = await getTask(c, id);
  const shimPid = Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
  process.kill(shimPid, 'SIGKILL');
  const exit = await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
  assert.equal(exit.event?.exit_status, 137);
  await until(() => !pidAlive(t.pid), 'container init gone');
  const ls = await c.ctr(['task', 'ls']);
  assert.ok(!ls.stdout.includes(id), ls.stdout);
  await c.ctr(['container', 'delete', id]);
});

test('shim delete prints a DeleteResponse with the persisted exit status', async () => {
  const id = uniqueId('persist');
  assert.equal(
    (
      await c.ctr([
        'run',
        '-d',
        '--runtime',
        TSSHIM_RUNTIME,
        ...PATH_ENV_ARGS,
        '--rootfs',
        rootfs,
        id,
        'sh',
        '-c',
        'sleep 0.3; exit 21',
      ])
    ).code,
    0
  );
  await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
  const bundle = c.bundleDir(id);
  const shimPid = Number(fs.readFileSync(path.join(bundle, 'shim.pid'), 'utf8'));
  process.kill(shimPid, 'SIGKILL');
  // containerd's own on-close hook runs `delete` and publishes exit+delete with the status it printed.
  const del = await events.waitFor((e) => e.topic === '/tasks/delete' && e.event?.container_id === id);
  assert.equal(del.event?.exit_status, 21, 'the persisted exit status, not 137');
  await c.ctr(['container', 'delete', id]);
});

test('the shim binary answers -v', () => {
  const bin = path.join(__dirname, '..', '..', '..', 'bin', 'containerd-shim-tsshim-v2');
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^containerd-shim-tsshim-v2:\n {2}Version: {2}\S+\n {2}Revision: \S+/);
});
