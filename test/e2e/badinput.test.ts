// Bad input against a running shim: hostile ids and bundles over its socket, a spec runc rejects, a
// missing runc binary, IO peers that vanish mid-stream, a runc that hangs, and ttrpc fuzzing. The
// shim must answer with errors, never crash, and keep serving its other containers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { getTask } from '../support/containerd-api';
import { busyboxRootfs, ensureBusyboxImage } from '../support/rootfs';
import { Client, Code, TtrpcError } from '../../src/ttrpc';
import { containerd as api } from '../../src/gen/proto';
import { TASK_SERVICE, removeContainer, runDetached, shimPidOf, shimSocketOf } from '../support/containers';
import { fdCount, mib, mountsUnder, pidAlive, rssBytes } from '../support/proc';
import { sleep, until } from '../support/wait';
import { fuzzTaskService, TASK_METHODS } from '../support/task-fuzz';

const T = api.task.v2;
const GROUP_ANNOTATION = 'io.containerd.tsshim.v2.group';
const FAKE_SLEEP_S = 6;

let c: Containerd;
let image: string;
let group: string;
let host: string;
let shim: number;
let client: Client;
let runcMarks: string;

before(async () => {
  const marks = `/tmp/tsshim-fake-runc-${process.pid}.log`;
  runcMarks = marks;
  c = await startContainerd({
    logLevel: 'info',
    env: { TSSHIM_FAKE_RUNC_SLEEP: String(FAKE_SLEEP_S), TSSHIM_FAKE_RUNC_MARK: marks },
  });
  image = await ensureBusyboxImage(c);
  group = uniqueId('bad');
  host = uniqueId('host');
  await runDetached(c, host, ['sleep', '100000'], { runtime: TSSHIM_RUNTIME, image, extra: groupArgs() });
  shim = await shimPidOf(c, host);
  client = await Client.connect(shimSocketOf(c, host));
});

after(async () => {
  client?.close();
  fs.rmSync(runcMarks, { force: true });
  await c?.stop();
});

function groupArgs(): string[] {
  return ['--annotation', `${GROUP_ANNOTATION}=${group}`];
}

function call(method: string, payload: Uint8Array, timeoutMs = 10_000): Promise<Buffer> {
  return client.call(TASK_SERVICE, method, payload, {
    timeoutMs,
    metadata: { 'containerd-namespace-ttrpc': [c.namespace] },
  });
}

async function callError(method: string, payload: Uint8Array): Promise<TtrpcError> {
  try {
    await call(method, payload);
  } catch (e) {
    assert.ok(e instanceof TtrpcError, `${method}: ${String(e)}`);
    return e;
  }
  throw new Error(`${method} succeeded but should have failed`);
}

async function hostStillServed(): Promise<void> {
  assert.ok(pidAlive(shim), 'the shim is alive');
  const st = T.StateResponse.decode(await call('State', T.StateRequest.encode({ id: host }).finish()));
  assert.equal(st.status, api.v1.types.Status.RUNNING);
  const r = await c.ctr(['task', 'exec', '--exec-id', uniqueId('chk'), host, 'sh', '-c', 'echo still-here']);
  assert.equal(r.stdout, 'still-here\n', r.stderr);
  assert.ok(!/uncaught exception|unhandled rejection/.test(c.logTail(200_000)), 'no uncaught error in the shim log');
}

const HOSTILE_IDS = ['../../etc', '../x', 'a/b', '/abs', '.', '..', 'x'.repeat(300), '', 'a b', 'id\0nul', '-leading'];

test('hostile container ids and bundles are refused with INVALID_ARGUMENT, nothing is written', async () => {
  const bundle = fs.mkdtempSync(path.join(c.dir, 'b-'));
  for (const id of HOSTILE_IDS) {
    const e = await callError('Create', T.CreateTaskRequest.encode({ id, bundle }).finish());
    assert.equal(e.code, Code.INVALID_ARGUMENT, `id ${JSON.stringify(id.slice(0, 20))}: ${e.message}`);
  }
  for (const b of [
    'relative/bundle',
    'bundle',
    `${bundle}/../..`,
    `${bundle}/./x`,
    `${c.dir}/../${path.basename(c.dir)}/b`,
    '',
  ]) {
    const e = await callError('Create', T.CreateTaskRequest.encode({ id: uniqueId('okid'), bundle: b }).finish());
    assert.equal(e.code, Code.INVALID_ARGUMENT, `bundle ${JSON.stringify(b)}: ${e.message}`);
  }
  assert.deepEqual(fs.readdirSync(bundle), [], 'nothing written into the bundle');
  await hostStillServed();
});

test('hostile exec ids are refused; every method answers an error for hostile container ids', async () => {
  const spec = {
    type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
    value: Buffer.from('{"args":["true"],"cwd":"/"}'),
  };
  for (const execId of HOSTILE_IDS.filter((x) => x !== '')) {
    const e = await callError('Exec', T.ExecProcessRequest.encode({ id: host, exec_id: execId, spec }).finish());
    assert.equal(e.code, Code.INVALID_ARGUMENT, `exec id ${JSON.stringify(execId.slice(0, 20))}: ${e.message}`);
  }
  const before = fs.readdirSync(c.bundleDir(host)).sort();
  const types = T as unknown as Record<
    string,
    { fromObject(o: object): object; encode(m: object): { finish(): Uint8Array } }
  >;
  for (const [method, type] of Object.entries(TASK_METHODS)) {
    if (method === 'Create' || method === 'Shutdown' || method === 'Connect') continue;
    for (const id of HOSTILE_IDS) {
      const payload = types[type]
        .encode(types[type].fromObject({ id, exec_id: id === '' ? '' : '../e', path: '/nonexistent-x/cp' }))
        .finish();
      const e = await callError(method, payload);
      assert.ok(
        [Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION].includes(e.code),
        `${method}(${JSON.stringify(id.slice(0, 20))}) answered ${Code[e.code]}: ${e.message}`
      );
    }
  }
  // Connect of an unknown id answers without a task pid; Shutdown with containers left is a no-op.
  assert.equal(
    T.ConnectResponse.decode(await call('Connect', T.ConnectRequest.encode({ id: '../x' }).finish())).task_pid,
    0
  );
  await call('Shutdown', T.ShutdownRequest.encode({ id: '../../x' }).finish());
  assert.deepEqual(
    fs
      .readdirSync(c.bundleDir(host))
      .filter((f) => !f.startsWith('chk'))
      .sort(),
    before.filter((f) => !f.startsWith('chk'))
  );
  await hostStillServed();
});

test("a spec runc rejects: Create answers runc's own message and leaves nothing behind", async () => {
  const id = uniqueId('badspec');
  const bundle = fs.mkdtempSync(path.join(c.dir, 'spec-'));
  const spec = JSON.parse(fs.readFileSync(path.join(c.bundleDir(host), 'config.json'), 'utf8'));
  spec.process.args = [];
  spec.root = { path: busyboxRootfs(), readonly: true };
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  const e = await callError('Create', T.CreateTaskRequest.encode({ id, bundle }).finish());
  assert.match(e.message, /args must not be empty/, e.message);
  assert.match(e.message, /^OCI runtime create failed/);
  const st = await callError('State', T.StateRequest.encode({ id }).finish());
  assert.equal(st.code, Code.NOT_FOUND);
  assert.ok(!fs.existsSync(path.join('/run/containerd/runc', c.namespace, id)), 'no runc state left');
  await hostStillServed();
});

test('runc binary missing (BinaryName = "/nonexistent/runc"): clear error at create, the group shim keeps serving', async () => {
  const opts = path.join(c.dir, 'norunc.toml');
  fs.writeFileSync(opts, 'BinaryName = "/nonexistent/runc"\n');
  const id = uniqueId('norunc');
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    '--runtime-config-path',
    opts,
    ...groupArgs(),
    image,
    id,
    'true',
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /\/nonexistent\/runc/, r.stderr);
  assert.match(r.stderr, /no such file|ENOENT|not found/i, r.stderr);
  assert.equal(await shimPidOf(c, host), shim, 'same shim');
  const ls = await c.ctr(['task', 'ls']);
  assert.ok(!ls.stdout.includes(id), ls.stdout);
  assert.deepEqual(mountsUnder(c.bundleDir(id)), [], 'rootfs unmounted after the failed create');
  await c.ctr(['container', 'delete', id]);
  await hostStillServed();
});

test('IO peers that vanish: ctr killed while its container prints forever; no crash, neighbours fine, RSS bounded', async () => {
  const baseline = rssBytes(shim);
  const printers: string[] = [];
  for (let round = 0; round < 3; round++) {
    const id = uniqueId('printer');
    printers.push(id);
    const ctr = c.spawnCtr([
      'run',
      '--runtime',
      TSSHIM_RUNTIME,
      ...groupArgs(),
      image,
      id,
      'sh',
      '-c',
      'while :; do echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz; done',
    ]);
    let got = 0;
    ctr.stdout!.on('data', (d: Buffer) => {
      got += d.length;
    });
    await until(() => got > 1 << 20, 'a MiB of output through ctr', 20_000);
    ctr.kill('SIGKILL');
    await new Promise((r) => ctr.once('close', r));
    await sleep(1500); // the container keeps printing into a pipe nobody reads
    assert.equal((await getTask(c, id)).status, 'RUNNING');
    await hostStillServed();
  }
  const grown = rssBytes(shim) - baseline;
  assert.ok(grown < 60 * 1048576, `shim RSS grew by ${mib(grown)} with dead IO peers`);
  for (const id of printers) await removeContainer(c, id);
  await hostStillServed();
});

test('a stuck runc (fake slow runc): State, Stats and Connect answer from memory while Pids waits', async () => {
  const opts = path.join(c.dir, 'slow.toml');
  // Not named `runc`: for a binary named so the shim lists pids from the cgroup, not with `ps`.
  fs.writeFileSync(
    opts,
    `BinaryName = ${JSON.stringify(path.join(repoRoot(), 'test', 'fixtures', 'fake-runc-slow', 'runc-slow'))}\n`
  );
  const id = uniqueId('slow');
  const pid = await runDetached(c, id, ['sleep', '100000'], {
    runtime: TSSHIM_RUNTIME,
    image,
    extra: ['--runtime-config-path', opts],
  });
  const slow = await Client.connect(shimSocketOf(c, id));
  try {
    const md = { 'containerd-namespace-ttrpc': [c.namespace] };
    fs.rmSync(runcMarks, { force: true });
    const started = Date.now();
    const pids = slow.call(TASK_SERVICE, 'Pids', T.PidsRequest.encode({ id }).finish(), {
      timeoutMs: 60_000,
      metadata: md,
    });
    await until(
      () => fs.existsSync(runcMarks) && fs.readFileSync(runcMarks, 'utf8').includes('ps '),
      'the shim to call the stuck runc ps',
      { timeoutMs: 10_000, everyMs: 20 }
    );
    const timed = async (method: string, payload: Uint8Array): Promise<number> => {
      const t0 = Date.now();
      await slow.call(TASK_SERVICE, method, payload, { timeoutMs: 5000, metadata: md });
      return Date.now() - t0;
    };
    for (let i = 0; i < 5; i++) {
      const ms = [
        await timed('State', T.StateRequest.encode({ id }).finish()),
        await timed('Stats', T.StatsRequest.encode({ id }).finish()),
        await timed('Connect', T.ConnectRequest.encode({ id }).finish()),
      ];
      for (const m of ms) assert.ok(m < 1000, `answered in ${m} ms while runc ps hangs`);
    }
    const viaContainerd = Date.now();
    assert.equal((await getTask(c, id)).status, 'RUNNING');
    assert.ok(Date.now() - viaContainerd < 2000, 'containerd Get answered');
    assert.ok(Date.now() - started < FAKE_SLEEP_S * 1000, 'all of it happened while runc was stuck');
    const list = T.PidsResponse.decode(await pids);
    assert.ok(
      list.processes.some((p) => p.pid === pid),
      'Pids answers once runc does'
    );
    assert.ok(Date.now() - started >= FAKE_SLEEP_S * 1000 - 200, 'and not before');
  } finally {
    slow.close();
  }
  await removeContainer(c, id);
});

test('ttrpc fuzzing: 5,000 random and mutated frames for every Task method; the shim survives and serves ctr', async () => {
  // Stats keeps a container's cgroup files open (src/task/cgroups/files.ts): open them before the
  // baseline, so that what is counted afterwards is only what the fuzzing left behind.
  await c.ctr(['task', 'metrics', host]);
  const fds = fdCount(shim);
  const stats = await fuzzTaskService({
    socket: shimSocketOf(c, host),
    namespace: c.namespace,
    protectedId: host,
    messages: Number(process.env.TSSHIM_FUZZ_MESSAGES ?? 5000),
    seed: Number(process.env.TSSHIM_FUZZ_SEED ?? 20240601),
  });
  console.log(`fuzz: ${JSON.stringify(stats)}`);
  assert.ok(stats.replies > stats.messages / 4, 'the shim answered most requests');
  assert.equal(await shimPidOf(c, host), shim, 'same shim process');
  await hostStillServed();
  await until(() => fdCount(shim) <= fds + 2, `shim fds back to ${fds} (now ${fdCount(shim)})`, 10_000);
  assert.ok(!fs.existsSync('/nonexistent-tsshim-fuzz'), 'nothing created outside the test dirs');
});
