// Task API parity with containerd-shim-runc-v2, end to end through a private containerd 1.6 and ctr:
// pause/resume, update, stats, OOM, checkpoint, log URIs, kill variants, pids with exec ids and
// runtime options. Where the right answer is not obvious the scenario runs with io.containerd.runc.v2
// too and the two answers are compared (terminal mode lives in tty.test.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import {
  startContainerd,
  uniqueId,
  pidAlive,
  repoRoot,
  RUNC_RUNTIME,
  TSSHIM_RUNTIME,
  type Containerd,
  type CtrResult,
} from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { callTasks, collectEvents, getTask, updateTask, type EventCollector } from '../support/containerd-api';
import { removeQuietly, runDetached as runContainer } from '../support/containers';
import { until } from '../support/wait';
import { containerd as gen, io as genIo } from '../../src/gen/proto';

let c: Containerd;
let rootfs: string;
let events: EventCollector;
const RUNTIMES = [RUNC_RUNTIME, TSSHIM_RUNTIME] as const;
const short = (runtime: string): string => runtime.split('.')[2];

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
  events = await collectEvents(c);
});
after(async () => {
  events?.stop();
  await c?.stop();
});

// ---------------------------------------------------------------------------------------------
// helpers

const fixture = (name: string): string => path.join(repoRoot(), 'test', 'fixtures', 'parity', name);

function runArgs(runtime: string, id: string, cmd: string[], extra: string[] = []): string[] {
  return ['--runtime', runtime, ...PATH_ENV_ARGS, ...extra, '--rootfs', rootfs, id, ...cmd];
}

const runRm = (runtime: string, id: string, cmd: string[], extra: string[] = []): Promise<CtrResult> =>
  c.ctr(['run', '--rm', ...runArgs(runtime, id, cmd, extra)], { timeoutMs: 60_000 });

const runDetached = (runtime: string, id: string, cmd: string[], extra: string[] = []) =>
  runContainer(c, id, cmd, { runtime, rootfs, extra: [...PATH_ENV_ARGS, ...extra] });
const remove = (id: string) => removeQuietly(c, id);

/** ctr's error line with the runtime-specific parts (ids, paths, pids) made comparable. */
function normalize(text: string, id: string): string {
  return text
    .split(id)
    .join('<id>')
    .replace(/\/tmp\/tss-[^/\s]+/g, '<dir>')
    .replace(/\b\d{3,}\b/g, '<n>')
    .trim();
}

function taskLsLine(ls: string, id: string): string[] {
  const line = ls.split('\n').find((l) => l.startsWith(id + ' '));
  assert.ok(line, `${id} not in:\n${ls}`);
  return line!.trim().split(/\s+/);
}

/** cgroup v1 directory of `pid` for one controller, from /proc/<pid>/cgroup. */
function cgroupDir(pid: number, controller: string): string {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  for (const l of lines) {
    const [, ctrls, p] = l.split(':');
    if (ctrls && ctrls.split(',').includes(controller)) {
      const mount = ctrls.split(',').sort().reverse().join(',');
      for (const name of [ctrls, mount, controller]) {
        const dir = path.join('/sys/fs/cgroup', name, p);
        if (fs.existsSync(dir)) return dir;
      }
    }
  }
  throw new Error(`no ${controller} cgroup for ${pid}: ${lines.join(' | ')}`);
}

function callExtra<T>(method: string, req: object): Promise<T> {
  return callTasks<T>(c, method, req);
}

// ---------------------------------------------------------------------------------------------
// pause / resume

test('pause/resume: PAUSED/RUNNING in task ls, /tasks/paused and /tasks/resumed, illegal transitions like runc.v2', async () => {
  const errors: Record<string, string[]> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`pause-${short(runtime)}`);
    await runDetached(runtime, id, ['sh', '-c', 'while :; do sleep 0.1; done']);
    try {
      const pid = Number(taskLsLine((await c.ctr(['task', 'ls'])).stdout, id)[1]);
      let r = await c.ctr(['task', 'exec', '-d', '--exec-id', 'bg', id, 'sleep', '1000']);
      assert.equal(r.code, 0, r.stderr);
      r = await c.ctr(['task', 'pause', id]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(taskLsLine((await c.ctr(['task', 'ls'])).stdout, id)[2], 'PAUSED');
      assert.equal((await getTask(c, id)).status, 'PAUSED');
      // An exec reports the container's pause, and ps still lists it with its exec id.
      assert.equal((await getTask(c, id, 'bg')).status, 'PAUSED');
      // ctr 1.6 prints `&ProcessDetails{ExecID:bg,...}`, ctr 2.x `exec_id:"bg"`.
      assert.match((await c.ctr(['task', 'ps', id])).stdout, /ExecID:bg,|exec_id:"bg"/);
      // The container's processes are really frozen.
      const freezer = cgroupDir(pid, 'freezer');
      assert.equal(fs.readFileSync(path.join(freezer, 'freezer.state'), 'utf8').trim(), 'FROZEN');
      await events.waitFor((e) => e.topic === '/tasks/paused' && e.event?.container_id === id);

      const mine: string[] = [];
      r = await c.ctr(['task', 'pause', id]);
      assert.equal(r.code, 1);
      mine.push(normalize(r.stderr, id));
      r = await c.ctr(['task', 'exec', '--exec-id', 'x1', id, 'true']);
      assert.equal(r.code, 1);
      mine.push(normalize(r.stderr, id));

      r = await c.ctr(['task', 'resume', id]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(taskLsLine((await c.ctr(['task', 'ls'])).stdout, id)[2], 'RUNNING');
      assert.equal((await getTask(c, id, 'bg')).status, 'RUNNING');
      assert.equal(fs.readFileSync(path.join(freezer, 'freezer.state'), 'utf8').trim(), 'THAWED');
      await events.waitFor((e) => e.topic === '/tasks/resumed' && e.event?.container_id === id);

      r = await c.ctr(['task', 'resume', id]);
      assert.equal(r.code, 1);
      mine.push(normalize(r.stderr, id));
      // Usable after the round trip.
      r = await c.ctr(['task', 'exec', '--exec-id', 'x2', id, 'echo', 'thawed']);
      assert.equal(r.stdout, 'thawed\n', r.stderr);
      errors[runtime] = mine;
    } finally {
      await remove(id);
    }
  }
  // containerd 2.x no longer appends the gRPC code (`: unknown`) to these messages.
  assert.deepEqual(
    errors[TSSHIM_RUNTIME].map((e) => e.replace(/: unknown$/, '')),
    [
      'ctr: cannot pause a paused container',
      'ctr: cannot exec in a paused state',
      'ctr: cannot resume a running process',
    ]
  );
  assert.deepEqual(errors[TSSHIM_RUNTIME], errors[RUNC_RUNTIME]);
});

test('a paused container killed with SIGKILL exits 137 and is deletable', async () => {
  const id = uniqueId('pausekill');
  await runDetached(TSSHIM_RUNTIME, id, ['sleep', '1000']);
  assert.equal((await c.ctr(['task', 'pause', id])).code, 0);
  assert.equal((await c.ctr(['task', 'kill', '-s', 'KILL', id])).code, 0);
  const exit = await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
  assert.equal(exit.event?.exit_status, 137);
  const r = await c.ctr(['task', 'delete', id]);
  assert.equal(r.code, 0, r.stderr);
  await c.ctr(['container', 'delete', id]);
});

// ---------------------------------------------------------------------------------------------
// update

test('Tasks/Update with LinuxResources sets memory.limit_in_bytes and cpu.shares; stopped task refuses like runc.v2', async () => {
  const refusals: Record<string, string> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`update-${short(runtime)}`);
    await runDetached(runtime, id, ['sleep', '1000']);
    try {
      const { pid } = await getTask(c, id);
      const mem = cgroupDir(pid, 'memory');
      const cpu = cgroupDir(pid, 'cpu');
      assert.notEqual(fs.readFileSync(path.join(mem, 'memory.limit_in_bytes'), 'utf8').trim(), String(64 << 20));
      await updateTask(c, id, { memory: { limit: 64 * 1024 * 1024 }, cpu: { shares: 512 } });
      assert.equal(
        fs.readFileSync(path.join(mem, 'memory.limit_in_bytes'), 'utf8').trim(),
        String(64 * 1024 * 1024),
        runtime
      );
      assert.equal(fs.readFileSync(path.join(cpu, 'cpu.shares'), 'utf8').trim(), '512', runtime);
      // A second update changes only what it names.
      await updateTask(c, id, { cpu: { shares: 256 } });
      assert.equal(fs.readFileSync(path.join(cpu, 'cpu.shares'), 'utf8').trim(), '256');
      assert.equal(fs.readFileSync(path.join(mem, 'memory.limit_in_bytes'), 'utf8').trim(), String(64 * 1024 * 1024));
      // Metrics see the new limit too.
      const m = await c.ctr(['task', 'metrics', id]);
      assert.match(m.stdout, new RegExp(`memory.limit_in_bytes\\s+${64 * 1024 * 1024}\\s`), m.stdout);

      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
      await until(async () => (await getTask(c, id)).status === 'STOPPED', 'stopped');
      const err = await updateTask(c, id, { cpu: { shares: 512 } }).then(
        () => null,
        (e: grpc.ServiceError) => e
      );
      assert.ok(err, `${runtime}: update of a stopped task succeeded`);
      refusals[runtime] = `${err!.code} ${err!.details}`;
    } finally {
      await remove(id);
    }
  }
  assert.equal(refusals[TSSHIM_RUNTIME], refusals[RUNC_RUNTIME]);
  assert.match(refusals[TSSHIM_RUNTIME], /cannot update a stopped container/);
});

// ---------------------------------------------------------------------------------------------
// stats

test('ctr task metrics: same rows as runc.v2; Tasks/Metrics decodes io.containerd.cgroups.v1.Metrics', async () => {
  const ids: Record<string, string> = {};
  const rows: Record<string, string[]> = {};
  const messages: Record<string, string[]> = {};
  try {
    for (const runtime of RUNTIMES) {
      const id = uniqueId(`stats-${short(runtime)}`);
      ids[runtime] = id;
      await runDetached(
        runtime,
        id,
        ['sh', '-c', 'head -c 4000000 /dev/urandom > /dev/null; sleep 1000'],
        ['--memory-limit', String(256 << 20)]
      );
    }
    await new Promise((r) => setTimeout(r, 300));
    const res = await callExtra<{ metrics: { id: string; data: { type_url: string; value: Buffer } }[] }>('Metrics', {
      filters: [],
    });
    for (const runtime of RUNTIMES) {
      const id = ids[runtime];
      const r = await c.ctr(['task', 'metrics', id]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.split('\n');
      const start = lines.findIndex((l) => l.startsWith('METRIC'));
      assert.ok(start > 0, r.stdout);
      rows[runtime] = lines
        .slice(start + 1)
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0]);
      const values = Object.fromEntries(
        lines
          .slice(start + 1)
          .filter(Boolean)
          .map((l) => [l.split(/\s+/)[0], l.trim().split(/\s+/).slice(1).join(' ')])
      );
      assert.equal(values['memory.limit_in_bytes'], String(256 << 20), `${runtime}\n${r.stdout}`);
      assert.ok(Number(values['cpuacct.usage']) > 0, r.stdout);
      assert.ok(Number(values['pids.current']) >= 1, r.stdout);

      const metric = res.metrics.find((m) => m.id === id);
      assert.ok(metric, `${runtime}: no Tasks/Metrics entry for ${id}`);
      assert.equal(metric!.data.type_url, 'io.containerd.cgroups.v1.Metrics');
      const decoded = genIo.containerd.cgroups.v1.Metrics.decode(metric!.data.value);
      const obj = genIo.containerd.cgroups.v1.Metrics.toObject(decoded, { longs: Number, defaults: false });
      assert.equal(obj.memory?.usage?.limit, 256 << 20);
      assert.ok(obj.cpu?.usage?.total > 0);
      assert.ok((obj.cpu?.usage?.per_cpu ?? []).length >= 1);
      assert.ok(obj.pids?.current >= 1);
      // The sub-messages present (not their zero-valued fields) are the layout consumers rely on.
      messages[runtime] = Object.keys(decoded.toJSON()).sort();
      assert.ok(
        decoded.cpu?.usage && decoded.cpu?.throttling,
        `${runtime}: cpu.usage and cpu.throttling always present`
      );
    }
    assert.deepEqual(rows[TSSHIM_RUNTIME], rows[RUNC_RUNTIME]);
    assert.deepEqual(messages[TSSHIM_RUNTIME], messages[RUNC_RUNTIME]);
  } finally {
    for (const id of Object.values(ids)) await remove(id);
  }
});

// ---------------------------------------------------------------------------------------------
// OOM

test('OOM: exit 137 and /tasks/oom before the /tasks/exit of that container (both shims)', async () => {
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`oom-${short(runtime)}`);
    const r = await runRm(
      runtime,
      id,
      ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=128M', 'count=1'],
      ['--memory-limit', '33554432']
    );
    assert.equal(r.code, 137, `${runtime}: ${r.stderr}`);
    // The exit is what matters here (2.2.7 once left out /tasks/delete of `ctr run --rm` for the Go
    // shim, so that is not waited for); /tasks/oom must already be there by then.
    await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
    const mine = events.events.filter((e) => e.event?.container_id === id).map((e) => e.topic);
    const oom = mine.indexOf('/tasks/oom');
    const exit = mine.indexOf('/tasks/exit');
    assert.ok(oom >= 0, `${runtime}: no /tasks/oom in ${mine.join(', ')}`);
    assert.ok(oom < exit, `${runtime}: /tasks/oom after /tasks/exit: ${mine.join(', ')}`);
    const exitEv = events.events.find((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
    assert.equal(exitEv?.event?.exit_status, 137);
  }
});

test('OOM of an exec process: /tasks/oom before its exit, the container survives', async () => {
  const id = uniqueId('oomexec');
  await runDetached(TSSHIM_RUNTIME, id, ['sleep', '1000'], ['--memory-limit', '33554432']);
  try {
    const r = await c.ctr([
      'task',
      'exec',
      '--exec-id',
      'hog',
      id,
      'dd',
      'if=/dev/zero',
      'of=/dev/null',
      'bs=128M',
      'count=1',
    ]);
    assert.equal(r.code, 137, r.stderr);
    await events.waitFor((e) => e.topic === '/tasks/oom' && e.event?.container_id === id);
    assert.equal((await getTask(c, id)).status, 'RUNNING');
  } finally {
    await remove(id);
  }
});

// ---------------------------------------------------------------------------------------------
// checkpoint / restore

function criuWorks(): { ok: boolean; why: string } {
  const r = spawnSync('criu', ['check'], { encoding: 'utf8', timeout: 20_000 });
  return { ok: r.status === 0, why: (r.stderr || r.stdout || String(r.error)).trim().split('\n').pop() ?? '' };
}
const criu = criuWorks();

test(
  'checkpoint: fails like runc.v2 where CRIU is broken, leaves the task running and usable',
  { skip: criu.ok ? 'criu works here: covered by the restore test' : false },
  async () => {
    const failures: Record<string, string> = {};
    for (const runtime of RUNTIMES) {
      const id = uniqueId(`ckpt-${short(runtime)}`);
      await runDetached(runtime, id, ['sh', '-c', 'while :; do sleep 0.1; done']);
      try {
        const r = await c.ctr(['task', 'checkpoint', id], { timeoutMs: 60_000 });
        assert.equal(r.code, 1, `${runtime}: checkpoint succeeded?\n${r.stdout}`);
        failures[runtime] = normalize(r.stderr, id);
        // The Go shim copies CRIU's log next to the bundle and names it in the error.
        const dump = path.join(c.bundleDir(id), 'criu-dump.log');
        assert.ok(r.stderr.includes(` path= ${dump}`), r.stderr);
        assert.ok(fs.statSync(dump).size > 0, `${runtime}: empty ${dump}`);
        assert.equal(fs.statSync(dump).mode & 0o777, 0o644, `${runtime}: mode of ${dump}`);
        assert.equal(taskLsLine((await c.ctr(['task', 'ls'])).stdout, id)[2], 'RUNNING');
        const e = await c.ctr(['task', 'exec', '--exec-id', 'after', id, 'echo', 'still-here']);
        assert.equal(e.stdout, 'still-here\n', e.stderr);
        assert.equal((await c.ctr(['task', 'pause', id])).code, 0);
        assert.equal((await c.ctr(['task', 'resume', id])).code, 0);
      } finally {
        await remove(id);
      }
    }
    assert.equal(failures[TSSHIM_RUNTIME], failures[RUNC_RUNTIME]);
    assert.match(failures[TSSHIM_RUNTIME], /criu failed: type DUMP/);
  }
);

test(
  'checkpoint and restore round trip',
  {
    skip: criu.ok
      ? false
      : `CRIU is broken on this kernel (criu check: ${criu.why}); the Go shim fails the same way (previous test)`,
  },
  async () => {
    const id = uniqueId('restore');
    await runDetached(TSSHIM_RUNTIME, id, [
      'sh',
      '-c',
      'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done',
    ]);
    try {
      const r = await c.ctr(['task', 'checkpoint', '--exit', id], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
    } finally {
      await remove(id);
    }
  }
);

// ---------------------------------------------------------------------------------------------
// log URIs

test('--log-uri file://: stdout and stderr appended to the file, like runc.v2', async () => {
  const dir = fs.mkdtempSync(path.join(c.dir, 'logs-'));
  for (const runtime of RUNTIMES) {
    const file = path.join(dir, short(runtime), 'sub', 'out.log'); // the parent dirs do not exist yet
    for (const n of [1, 2]) {
      const r = await runRm(
        runtime,
        uniqueId(`logf-${short(runtime)}`),
        ['sh', '-c', `echo out${n}; echo err${n} >&2`],
        ['--log-uri', `file://${file}`]
      );
      assert.equal(r.code, 0, `${runtime}: ${r.stderr}`);
      assert.equal(r.stdout, '', 'output goes to the file, not to ctr');
    }
    // The Go shim publishes the exit before its file copy finished: the last line may land later.
    let text = '';
    for (const end = Date.now() + 5000; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
      text = fs.readFileSync(file, 'utf8');
      if (text.split('\n').filter(Boolean).length >= 4) break;
    }
    const got = text.split('\n').filter(Boolean).sort();
    if (runtime === RUNC_RUNTIME) {
      // Seen in CI: the Go shim sometimes drops a run's stderr line in file:// mode for good (not
      // only late). tsshim drains both pipes before it reports the exit and must lose nothing.
      assert.ok(
        got.includes('out1') && got.includes('out2') && got.every((l) => ['err1', 'err2', 'out1', 'out2'].includes(l)),
        `${runtime}: ${text}`
      );
    } else {
      assert.deepEqual(got, ['err1', 'err2', 'out1', 'out2'], `${runtime}: ${text}`);
    }
    assert.ok(text.indexOf('out1') < text.indexOf('out2'), 'second run appended');
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
  }
});

test('--log-uri binary://: a logger gets fds 3/4/5, its args and only CONTAINER_ID/NAMESPACE, like runc.v2', async () => {
  const dir = fs.mkdtempSync(path.join(c.dir, 'blog-'));
  const metas: Record<string, string> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`logb-${short(runtime)}`);
    const prefix = path.join(dir, short(runtime));
    const r = await runRm(
      runtime,
      id,
      ['sh', '-c', 'echo to-stdout; echo to-stderr >&2'],
      ['--log-uri', `binary://${fixture('logger.sh')}?out=${prefix}`]
    );
    assert.equal(r.code, 0, `${runtime}: ${r.stderr}`);
    await until(
      () =>
        fs.existsSync(`${prefix}.stdout`) &&
        fs.readFileSync(`${prefix}.stdout`, 'utf8') !== '' &&
        fs.existsSync(`${prefix}.stderr`) &&
        fs.readFileSync(`${prefix}.stderr`, 'utf8') !== '',
      `${runtime} logger output`,
      5000
    );
    assert.equal(fs.readFileSync(`${prefix}.stdout`, 'utf8'), 'to-stdout\n');
    assert.equal(fs.readFileSync(`${prefix}.stderr`, 'utf8'), 'to-stderr\n');
    const meta = fs.readFileSync(`${prefix}.meta`, 'utf8');
    assert.match(meta, new RegExp(`^args=out ${prefix}$`, 'm'));
    assert.match(meta, new RegExp(`CONTAINER_ID=['"]?${id}['"]?$`, 'm'));
    assert.match(meta, new RegExp(`CONTAINER_NAMESPACE=['"]?${c.namespace}['"]?$`, 'm'));
    metas[runtime] = meta.split(id).join('<id>').split(prefix).join('<prefix>');
  }
  // Same argv and the same environment (no PATH or anything else inherited from the shim).
  assert.equal(metas[TSSHIM_RUNTIME], metas[RUNC_RUNTIME]);
});

test('malformed and unusable log URIs give clear errors', async () => {
  const bogus: Record<string, string> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`logx-${short(runtime)}`);
    const r = await runRm(runtime, id, ['true'], ['--log-uri', 'bogus://x']);
    assert.equal(r.code, 1);
    bogus[runtime] = normalize(r.stderr, id);
    // Nothing left behind.
    assert.ok(!(await c.ctr(['container', 'ls', '-q'])).stdout.includes(id));
  }
  assert.equal(bogus[TSSHIM_RUNTIME], bogus[RUNC_RUNTIME]);
  assert.match(bogus[TSSHIM_RUNTIME], /unknown STDIO scheme bogus/);

  let r = await runRm(TSSHIM_RUNTIME, uniqueId('logx'), ['true'], ['--log-uri', 'binary:///nonexistent/logger']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /failed to create init process I\/O: .*\/nonexistent\/logger.*ENOENT/);
  // The Go shim ignores the host of file://relative/x and writes /x on the host; tsshim refuses.
  r = await runRm(TSSHIM_RUNTIME, uniqueId('logx'), ['true'], ['--log-uri', 'file://relative/x']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /expected file:\/\/\/absolute\/path/);
});

test('a failed runc create or exec reports its error once, through ctr only, like runc.v2', async () => {
  const seen: Record<string, string[]> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`enoent-${short(runtime)}`);
    const r = await runRm(runtime, id, ['/nonexistent']);
    assert.equal(r.code, 1);
    const ex = uniqueId(`enoexec-${short(runtime)}`);
    await runDetached(runtime, ex, ['sleep', '1000']);
    try {
      const e = await c.ctr(['task', 'exec', '--exec-id', 'bad', ex, '/nonexistent']);
      assert.notEqual(e.code, 0);
      seen[runtime] = [normalize(r.stdout + r.stderr, id), normalize(e.stdout + e.stderr, ex)];
    } finally {
      await remove(ex);
    }
  }
  assert.match(
    seen[TSSHIM_RUNTIME][0],
    /^ctr: failed to create shim task: OCI runtime create failed: runc create failed: .*\/nonexistent.*?(: unknown)?$/
  );
  assert.deepEqual(seen[TSSHIM_RUNTIME], seen[RUNC_RUNTIME]);
});

// ---------------------------------------------------------------------------------------------
// kill, pids

test('task ps shows exec ids in INFO like runc.v2; kill --exec-id; kill errors match', async () => {
  const results: Record<string, string[]> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`ps-${short(runtime)}`);
    await runDetached(runtime, id, ['sleep', '1000']);
    try {
      let r = await c.ctr(['task', 'exec', '-d', '--exec-id', 'bg1', id, 'sleep', '1000']);
      assert.equal(r.code, 0, r.stderr);
      const ps = await c.ctr(['task', 'ps', id]);
      const rows = ps.stdout
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/));
      assert.deepEqual(rows[0], ['PID', 'INFO']);
      const init = (await getTask(c, id)).pid;
      const execRow = rows.find((row) => row[1] !== '-' && row[0] !== 'PID');
      assert.ok(
        rows.some((row) => Number(row[0]) === init && row[1] === '-'),
        ps.stdout
      );
      assert.ok(execRow, ps.stdout);
      assert.ok(
        ['&ProcessDetails{ExecID:bg1,XXX_unrecognized:[],}', 'exec_id:"bg1"'].includes(execRow![1]),
        `exec details as ctr 1.6 or 2.x prints them: ${execRow![1]}`
      );
      const execPid = Number(execRow![0]);
      assert.equal((await getTask(c, id, 'bg1')).pid, execPid);

      r = await c.ctr(['task', 'kill', '--exec-id', 'bg1', '-s', 'KILL', id]);
      assert.equal(r.code, 0, r.stderr);
      const exit = await events.waitFor(
        (e) => e.topic === '/tasks/exit' && e.event?.container_id === id && e.event?.id === 'bg1'
      );
      assert.equal(exit.event?.exit_status, 137);
      assert.equal(exit.event?.pid, execPid);
      assert.equal((await getTask(c, id)).status, 'RUNNING', 'the init is untouched');
      const after = await c.ctr(['task', 'ps', id]);
      assert.ok(!after.stdout.includes('bg1'), after.stdout);

      const errs: string[] = [];
      r = await c.ctr(['task', 'kill', '--exec-id', 'bg1', '-s', 'KILL', id]);
      errs.push(`${r.code} ${normalize(r.stderr, id)}`);
      r = await c.ctr(['task', 'kill', '--exec-id', 'nope', id]);
      errs.push(`${r.code} ${normalize(r.stderr, id)}`);
      results[runtime] = errs;
    } finally {
      await remove(id);
    }
  }
  assert.deepEqual(results[TSSHIM_RUNTIME], [
    '1 ctr: process already finished: not found',
    '1 ctr: process does not exist nope: not found',
  ]);
  assert.deepEqual(results[TSSHIM_RUNTIME], results[RUNC_RUNTIME]);
});

/** What `runc ps` lists for a container of this containerd (runc's default root), in its order. */
function runcPs(id: string): number[] {
  const r = spawnSync('runc', ['--root', `/run/containerd/runc/${c.namespace}`, 'ps', '--format', 'json', id], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as number[] | null) ?? [];
}

/** `ctr task ps` as [pid, info] rows, in its order. */
async function ctrPs(id: string): Promise<[number, string][]> {
  const r = await c.ctr(['task', 'ps', id]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .map(([pid, info]) => [Number(pid), info]);
}

/** The cgroup runc ps walks for `pid`: the devices hierarchy on v1, the unified one on v2. */
function psCgroupDir(pid: number): string {
  if (!fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) return cgroupDir(pid, 'devices');
  const line = fs
    .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  assert.ok(line, `no unified cgroup for ${pid}`);
  return path.join('/sys/fs/cgroup', line.slice(3));
}

test('task ps lists what runc ps lists, in its order (processes, an exec, a sub-cgroup, paused), like runc.v2', async () => {
  const shapes: Record<string, string[]> = {};
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`pslist-${short(runtime)}`);
    await runDetached(runtime, id, ['sh', '-c', 'sleep 1000 & sleep 1000 & wait']);
    let sub = '';
    try {
      let r = await c.ctr(['task', 'exec', '-d', '--exec-id', 'bg', id, 'sleep', '1000']);
      assert.equal(r.code, 0, r.stderr);
      const init = (await getTask(c, id)).pid;
      const exec = (await getTask(c, id, 'bg')).pid;
      const rows = await until(async () => {
        const rows = await ctrPs(id);
        return rows.length === 4 ? rows : null;
      }, 'sh, its two sleeps and the exec');
      // One sleep moves to a cgroup below the container's: runc ps lists the descendants too.
      const sleeper = rows!.map(([pid]) => pid).find((pid) => pid !== init && pid !== exec)!;
      sub = path.join(psCgroupDir(init), 'tsshim-ps-sub');
      fs.mkdirSync(sub);
      fs.writeFileSync(path.join(sub, 'cgroup.procs'), String(sleeper));
      const shape: string[] = [];
      const compare = async (when: string) => {
        const listed = await ctrPs(id);
        assert.deepEqual(
          listed.map(([pid]) => pid),
          runcPs(id),
          `${runtime}, ${when}: ctr task ps lists runc ps's pids`
        );
        assert.equal(listed.at(-1)![0], sleeper, `${runtime}, ${when}: the sub-cgroup's sleep comes last`);
        for (const [pid, info] of listed)
          shape.push(`${when} ${pid === init ? 'init' : pid === exec ? 'exec' : 'other'} ${info}`);
      };
      await compare('running');
      r = await c.ctr(['task', 'pause', id]);
      assert.equal(r.code, 0, r.stderr);
      await compare('paused');
      r = await c.ctr(['task', 'resume', id]);
      assert.equal(r.code, 0, r.stderr);
      shapes[runtime] = shape;
    } finally {
      await remove(id);
      try {
        if (sub) fs.rmdirSync(sub);
      } catch {
        /* removed with the container's cgroup by runc delete */
      }
    }
  }
  assert.equal(shapes[TSSHIM_RUNTIME].length, 8);
  assert.deepEqual(shapes[TSSHIM_RUNTIME], shapes[RUNC_RUNTIME]);
});

test('kill -a signals every process of the container (runc kill --all), not only the init', async () => {
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`killall-${short(runtime)}`);
    // The shell survives USR1 (trapped) and starts a new sleep; a signalled sleep dies.
    await runDetached(runtime, id, [
      'sh',
      '-c',
      'trap "echo got-usr1 > /tmp/usr1-$HOSTNAME" USR1; while :; do sleep 1000 & wait $!; done',
    ]);
    try {
      const init = (await getTask(c, id)).pid;
      const before = await until(async () => {
        const ps = (await c.ctr(['task', 'ps', id])).stdout;
        const pids = ps
          .split('\n')
          .slice(1)
          .map((l) => Number(l.trim().split(/\s+/)[0]))
          .filter(Boolean);
        return pids.length === 2 ? pids : null;
      }, 'sh and sleep');
      const sleeper = before!.find((p) => p !== init)!;
      const r = await c.ctr(['task', 'kill', '-a', '-s', 'USR1', id]);
      assert.equal(r.code, 0, r.stderr);
      await until(() => !pidAlive(sleeper), `${runtime}: sleep ${sleeper} killed by kill -a`, 5000);
      assert.ok(pidAlive(init), `${runtime}: trapped init survives`);
      assert.equal((await getTask(c, id)).status, 'RUNNING');
    } finally {
      await remove(id);
    }
  }
});

test('host pid namespace: when the init exits, the remaining processes are killed (no sleep survives)', async () => {
  for (const runtime of RUNTIMES) {
    const id = uniqueId(`hostpid-${short(runtime)}`);
    const marker = path.join(rootfs, 'tmp', `${id}.pid`);
    await runDetached(
      runtime,
      id,
      ['sh', '-c', `sleep 1000 & echo $! > /tmp/${id}.pid; sleep 0.5; exit 4`],
      ['--with-ns', `pid:/proc/${process.pid}/ns/pid`]
    );
    try {
      const bg = await until(
        () => (fs.existsSync(marker) ? Number(fs.readFileSync(marker, 'utf8').trim()) : 0),
        'background pid'
      );
      assert.ok(pidAlive(bg), 'background sleep runs while the init lives');
      await until(
        () => fs.readFileSync(`/proc/${bg}/cmdline`, 'utf8') === 'sleep\u00001000\u0000',
        'the background process to be sleep 1000'
      );
      const exit = await events.waitFor((e) => e.topic === '/tasks/exit' && e.event?.container_id === id);
      assert.equal(exit.event?.exit_status, 4);
      await until(() => !pidAlive(bg), `${runtime}: background sleep ${bg} killed after the init's exit`, 5000);
    } finally {
      await remove(id);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// runtime options

function wrapperCopy(dir: string, name: string): string {
  const p = path.join(dir, name);
  fs.copyFileSync(fixture('runtime-wrapper.sh'), p);
  fs.chmodSync(p, 0o755);
  return p;
}

test('--runtime-config-path BinaryName = crun: tsshim runs crun exactly as runc.v2 --runc-binary does', async () => {
  const dir = fs.mkdtempSync(path.join(c.dir, 'crun-'));
  const argv: Record<string, string[]> = {};
  const errs: Record<string, string> = {};
  for (const runtime of RUNTIMES) {
    const root = path.join(dir, short(runtime), 'root');
    fs.mkdirSync(root, { recursive: true });
    const binary = wrapperCopy(path.join(dir, short(runtime)), 'wrapper-crun');
    const id = uniqueId(`crun-${short(runtime)}`);
    let extra: string[];
    if (runtime === TSSHIM_RUNTIME) {
      const toml = path.join(dir, 'tsshim.toml');
      fs.writeFileSync(toml, `BinaryName = ${JSON.stringify(binary)}\nRoot = ${JSON.stringify(root)}\n`);
      extra = ['--runtime-config-path', toml];
    } else {
      extra = ['--runc-binary', binary, '--runc-root', root];
    }
    const r = await c.ctr(['run', '-d', ...runArgs(runtime, id, ['sleep', '1000'], extra)]);
    const log = path.join(root, 'argv.log'); // the wrapper logs next to --root <root>/<namespace>
    argv[runtime] = fs.existsSync(log)
      ? fs
          .readFileSync(log, 'utf8')
          .split(id)
          .join('<id>')
          .split(dir + '/' + short(runtime))
          .join('<dir>')
          .replace(/\/tmp\/tss-[^/\s]+/g, '<c>')
          .split('\n')
          .filter(Boolean)
      : [];
    if (r.code === 0) {
      // crun works on this host: it must really run the container under the root we gave.
      const list = spawnSync('crun', ['--root', path.join(root, c.namespace), 'list'], { encoding: 'utf8' });
      assert.match(list.stdout, new RegExp(`^${id}\\s+\\d+\\s+running`, 'm'), list.stdout + list.stderr);
      await remove(id);
    } else {
      errs[runtime] = normalize(r.stderr, id);
      await c.ctr(['container', 'delete', id]);
    }
  }
  // Both shims invoked crun (through the wrapper) with the same command lines.
  assert.ok(argv[TSSHIM_RUNTIME].length >= 1, 'crun was never called by tsshim');
  assert.match(
    argv[TSSHIM_RUNTIME][0],
    /^--root <dir>\/root\/tsshim-test --log <c>\/.*\/log\.json --log-format json create --bundle \S+ --pid-file \S+\/init\.pid <id>$/
  );
  assert.deepEqual(argv[TSSHIM_RUNTIME], argv[RUNC_RUNTIME]);
  // crun 1.8 refuses hosts whose cgroup v2 hierarchy holds a controller (hugetlb here): then both
  // shims must report crun's own error the same way.
  assert.equal(errs[TSSHIM_RUNTIME], errs[RUNC_RUNTIME]);
});

test('ctr passes --runc-binary/--runc-root only for io.containerd.runc.v2 (refused, resp. dropped, for tsshim)', async () => {
  let id = uniqueId('runcbin');
  const r = await c.ctr(['run', '-d', ...runArgs(TSSHIM_RUNTIME, id, ['true'], ['--runc-binary', '/bin/false'])]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /specifying runc-binary and runc-systemd-cgroup is only supported for "io.containerd.runc.v2" runtime/
  );

  // --runc-root is silently ignored by ctr for other runtime names: no options reach the shim.
  id = uniqueId('runcroot');
  const root = fs.mkdtempSync(path.join(c.dir, 'runcroot-'));
  await runDetached(TSSHIM_RUNTIME, id, ['sleep', '1000'], ['--runc-root', root]);
  try {
    assert.equal(fs.readFileSync(path.join(c.bundleDir(id), 'options.json'), 'utf8'), '{}');
    assert.deepEqual(fs.readdirSync(root), []);
    const st = spawnSync('runc', ['--root', `/run/containerd/runc/${c.namespace}`, 'state', id], { encoding: 'utf8' });
    assert.equal(st.status, 0, st.stderr);
  } finally {
    await remove(id);
  }
});

test('typed containerd.runc.v1.Options (Tasks/Create options) reach tsshim: binary_name and root, like runc.v2', async () => {
  const dir = fs.mkdtempSync(path.join(c.dir, 'typed-'));
  const argv: Record<string, string[]> = {};
  for (const runtime of RUNTIMES) {
    const base = path.join(dir, short(runtime));
    const root = path.join(base, 'root');
    fs.mkdirSync(root, { recursive: true });
    const binary = wrapperCopy(base, 'wrapper-runc');
    const id = uniqueId(`typed-${short(runtime)}`);
    const cr = await c.ctr(['container', 'create', ...runArgs(runtime, id, ['sleep', '1000'])]);
    assert.equal(cr.code, 0, cr.stderr);
    try {
      const value = gen.runc.v1.Options.encode({ binary_name: binary, root }).finish();
      const created = await callExtra<{ pid: number }>('Create', {
        container_id: id,
        options: { type_url: 'containerd.runc.v1.Options', value: Buffer.from(value) },
      });
      assert.ok(created.pid > 0);
      await callExtra('Start', { container_id: id });
      assert.equal((await getTask(c, id)).status, 'RUNNING');
      const opts = JSON.parse(fs.readFileSync(path.join(c.bundleDir(id), 'options.json'), 'utf8'));
      assert.deepEqual(opts, { binary_name: binary, root });
      assert.equal(fs.readFileSync(path.join(c.bundleDir(id), 'runtime'), 'utf8'), binary);
      const st = spawnSync('runc', ['--root', path.join(root, c.namespace), 'state', id], { encoding: 'utf8' });
      assert.equal(st.status, 0, st.stderr);
      assert.equal(JSON.parse(st.stdout).pid, created.pid);
      // Later operations use the same binary and root.
      assert.equal((await c.ctr(['task', 'pause', id])).code, 0);
      assert.equal((await c.ctr(['task', 'resume', id])).code, 0);
      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
      await until(async () => (await getTask(c, id)).status === 'STOPPED', 'stopped');
      assert.equal((await c.ctr(['task', 'delete', id])).code, 0);
    } finally {
      await remove(id);
    }
    argv[runtime] = fs
      .readFileSync(path.join(root, 'argv.log'), 'utf8')
      .split(id)
      .join('<id>')
      .split(base)
      .join('<dir>')
      .replace(/\/tmp\/tss-[^/\s]+/g, '<c>')
      .split('\n')
      .filter(Boolean)
      // The delete subcommand's `delete --force` after the shim is gone comes at a time of its own.
      .filter((l) => !/ delete --force /.test(l));
  }
  assert.deepEqual(argv[TSSHIM_RUNTIME], argv[RUNC_RUNTIME]);
  assert.deepEqual(
    argv[TSSHIM_RUNTIME].map((l) => l.replace(/^--root \S+ --log \S+ --log-format json /, '').split(' ')[0]),
    ['create', 'start', 'pause', 'resume', 'kill', 'delete']
  );
});
