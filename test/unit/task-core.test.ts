// The Task core without containerd or runc: a TaskService handed a fake exit source, a fake OOM
// monitor and the fake runc (test/fixtures/fake-runc, FAKE_RUNC_DIR holds a subcommand while an exit
// arrives). Every assertion is about the ORDER of the events the service hands to its sink and the
// states it answers, never about timings.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Reaper, type Exit } from '../../src/sys/reaper';
import { TaskService, STATUS, type OomMonitor } from '../../src/task/service';
import { TaskEvents, type EventSink } from '../../src/task/events';
import { nullLogger } from '../../src/sys/logger';
import { Code } from '../../src/ttrpc';
import { rpcError } from '../../src/task/rpc';
import { containerd } from '../../src/gen/proto';

// runc runs go through the real reaper (libuv owns them); the container's processes do not.
Reaper.instance({ subreaper: false });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-task-core-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

const fakeRunc = path.join(process.cwd(), 'test', 'fixtures', 'fake-runc', 'runc');
const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };

/** Exits handed to the service as the reaper would hand them. */
class FakeExits {
  private subs: ((e: Exit) => void)[] = [];
  subscribe(fn: (e: Exit) => void) {
    this.subs.push(fn);
    return () => {};
  }
  emit(pid: number, status: number) {
    for (const s of this.subs) s({ pid, status, at: new Date(), atNanos: 0, nanos: 0 });
  }
}

/** OOMs the test has marked pending are reported when the service flushes (before an init's exit). */
class FakeOom implements OomMonitor {
  pending = new Set<string>();
  constructor(private onOom: (key: string) => void) {}
  async add(): Promise<void> {}
  remove(): void {}
  handover(): null {
    return null;
  }
  async flush(key: string): Promise<void> {
    if (this.pending.delete(key)) this.onOom(key);
  }
  settled(key: string): boolean {
    return !this.pending.has(key);
  }
  close(): void {}
}

/** Topics in publication order; exits carry the id of the process ("/tasks/exit e1"). */
class RecordingSink implements EventSink {
  readonly topics: string[] = [];
  publish(_ns: string, topic: string, _typeUrl: string, value: Uint8Array): void {
    if (topic === '/tasks/exit') topic += ` ${containerd.events.TaskExit.decode(value).id}`;
    this.topics.push(topic);
  }
}

function sleeper(): number {
  const c = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(c);
  return c.pid!;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

let seq = 0;
const RUNC_COMMANDS = new Set([
  'create',
  'start',
  'exec',
  'kill',
  'delete',
  'pause',
  'resume',
  'update',
  'ps',
  'checkpoint',
  'restore',
]);

/** A service, its fakes and one created container c1 whose init is a live `sleep` (not started). */
async function setup(env: Record<string, string> = {}) {
  const ctl = fs.mkdtempSync(path.join(dir, 'ctl-'));
  const sink = new RecordingSink();
  const exits = new FakeExits();
  let oom!: FakeOom;
  const service = new TaskService({
    events: new TaskEvents(sink),
    exits,
    runner: Reaper.instance(),
    log: nullLogger,
    shimPid: process.pid,
    onEmpty: () => {},
    oomMonitor: (onOom) => (oom = new FakeOom(onOom)),
  });
  const bundle = fs.mkdtempSync(path.join(dir, `bundle-${seq++}-`));
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ linux: { namespaces: [{ type: 'pid' }] } }));
  const initPid = sleeper();
  fs.writeFileSync(path.join(ctl, 'create.pid'), String(initPid));
  const record = path.join(ctl, 'record');
  // The runc client copies the environment once per container: set it around the Create.
  const saved = { ...process.env };
  Object.assign(process.env, { FAKE_RUNC_DIR: ctl, FAKE_RUNC_RECORD: record, ...env });
  const options = {
    type_url: 'containerd.runc.v1.Options',
    value: containerd.runc.v1.Options.encode({ binary_name: fakeRunc, root: path.join(dir, 'root') }).finish(),
  };
  const create = () =>
    service.create({
      namespace: 'ns',
      id: 'c1',
      bundle,
      rootfs: [],
      stdio,
      checkpoint: '',
      parentCheckpoint: '',
      options,
    });
  const restoreEnv = () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  };
  /** Holds runc `cmd` (after it wrote its pid file) until the returned release is called. */
  const hold = (cmd: string) => {
    fs.writeFileSync(path.join(ctl, `${cmd}.hold`), '');
    return {
      held: () => until(() => fs.existsSync(path.join(ctl, `${cmd}.held`)), `runc ${cmd} running`),
      release: () => fs.rmSync(path.join(ctl, `${cmd}.hold`)),
    };
  };
  const runcCalls = () =>
    (fs.existsSync(record) ? fs.readFileSync(record, 'utf8') : '')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\x1f').find((a) => RUNC_COMMANDS.has(a)) ?? '');
  const execPid = (): number => {
    const p = sleeper();
    fs.writeFileSync(path.join(ctl, 'exec.pid'), String(p));
    return p;
  };
  const addExec = async (execId: string) => {
    await service.exec('ns', 'c1', execId, stdio, { value: Buffer.from(JSON.stringify({ args: ['sh'], cwd: '/' })) });
  };
  const published = (topic: string) => until(() => sink.topics.includes(topic), topic);
  return {
    service,
    exits,
    sink,
    initPid,
    create,
    restoreEnv,
    hold,
    runcCalls,
    execPid,
    addExec,
    published,
    oom: () => oom,
  };
}

/** setup() with c1 created (the environment restored). */
async function created(env: Record<string, string> = {}) {
  const s = await setup(env);
  try {
    await s.create();
  } finally {
    s.restoreEnv();
  }
  return s;
}

async function started(env: Record<string, string> = {}) {
  const s = await created(env);
  await s.service.start('ns', 'c1', '');
  return s;
}

/** The status containerd receives for the error (rpc.ts maps the Task core's errors once). */
const isCode = (code: Code) => (e: unknown) => rpcError(e).code === code;

test('an init that exits while runc create runs: /tasks/create goes out first, then its exit', async () => {
  const s = await setup();
  const create = s.hold('create');
  const created = s.create();
  await create.held();
  s.restoreEnv(); // the runc client copied it before its first run
  s.exits.emit(s.initPid, 137);
  create.release();
  await created;
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, ['/tasks/create', '/tasks/exit c1']);
});

test('an init that exits while runc start runs: the exit is held until /tasks/start went out', async () => {
  const s = await created();
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  s.exits.emit(s.initPid, 1);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.sink.topics, ['/tasks/create'], 'no exit before the start event');
  start.release();
  assert.equal(await starting, s.initPid);
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, ['/tasks/create', '/tasks/start', '/tasks/exit c1']);
  assert.equal(s.service.state('ns', 'c1', '').status, STATUS.STOPPED);
  assert.equal(s.service.state('ns', 'c1', '').exit_status, 1);
});

test('an init that died during runc start, with nothing left to wait for: its exit goes out in the same turn as /tasks/start', async () => {
  const s = await created();
  // What was published by the first microtask after /tasks/start: the Start reply's own work runs
  // from then on, and an exit published later would wait for it.
  let seenRightAfterStart: string[] | undefined;
  const publish = s.sink.publish.bind(s.sink);
  s.sink.publish = (ns, topic, typeUrl, value) => {
    publish(ns, topic, typeUrl, value);
    if (topic === '/tasks/start') queueMicrotask(() => (seenRightAfterStart = [...s.sink.topics]));
  };
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  s.exits.emit(s.initPid, 0);
  start.release();
  await starting;
  assert.deepEqual(seenRightAfterStart, ['/tasks/create', '/tasks/start', '/tasks/exit c1']);
});

test('an init that died during runc start with an OOM pending: the exit waits for the OOM check', async () => {
  const s = await created();
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  s.oom().pending.add('ns/c1');
  s.exits.emit(s.initPid, 137);
  start.release();
  await starting;
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, ['/tasks/create', '/tasks/start', '/tasks/oom', '/tasks/exit c1']);
});

test("exec exits are published before the init's exit, even when the init died first", async () => {
  const s = await started();
  const e1 = s.execPid();
  await s.addExec('e1');
  await s.service.start('ns', 'c1', 'e1');
  s.exits.emit(s.initPid, 137);
  await new Promise((r) => setImmediate(r));
  assert.ok(!s.sink.topics.includes('/tasks/exit c1'), 'the init exit waits for the running exec');
  s.exits.emit(e1, 137);
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, [
    '/tasks/create',
    '/tasks/start',
    '/tasks/exec-added',
    '/tasks/exec-started',
    '/tasks/exit e1',
    '/tasks/exit c1',
  ]);
});

test('an OOM seen when the init exits is published before the exit', async () => {
  const s = await started();
  s.oom().pending.add('ns/c1');
  s.exits.emit(s.initPid, 137);
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, ['/tasks/create', '/tasks/start', '/tasks/oom', '/tasks/exit c1']);
});

test('an exec that exits before its Start returned: exec-started first, then its exit', async () => {
  const s = await started();
  const e1 = s.execPid();
  await s.addExec('e1');
  const exec = s.hold('exec');
  const starting = s.service.start('ns', 'c1', 'e1');
  await exec.held();
  s.exits.emit(e1, 3);
  exec.release();
  assert.equal(await starting, e1);
  await s.published('/tasks/exit e1');
  assert.deepEqual(s.sink.topics, [
    '/tasks/create',
    '/tasks/start',
    '/tasks/exec-added',
    '/tasks/exec-started',
    '/tasks/exit e1',
  ]);
  const st = s.service.state('ns', 'c1', 'e1');
  assert.equal(st.status, STATUS.STOPPED);
  assert.equal(st.exit_status, 3);
});

test('Pause racing the init exit: the exit wins, the container stays stopped and is thawed', async () => {
  const s = await started();
  const pause = s.hold('pause');
  const pausing = s.service.pause('ns', 'c1');
  await pause.held();
  assert.equal(s.service.state('ns', 'c1', '').status, STATUS.PAUSING);
  s.exits.emit(s.initPid, 0);
  await s.published('/tasks/exit c1');
  pause.release();
  await pausing;
  assert.equal(s.service.state('ns', 'c1', '').status, STATUS.STOPPED, 'the late pause does not overwrite the exit');
  assert.deepEqual(
    s.sink.topics,
    ['/tasks/create', '/tasks/start', '/tasks/exit c1'],
    'no /tasks/paused after the exit'
  );
  // runc froze the cgroup after the exit handler looked: what is left in it must be able to die.
  await until(() => s.runcCalls().includes('resume'), 'runc resume after the late pause');
  await assert.rejects(s.service.resume('ns', 'c1'), /cannot resume a stopped container/);
});

test('Kill after the exit: NOT_FOUND for an exec and for the init, no signal, no event', async () => {
  const s = await started({ FAKE_RUNC_FAIL: 'kill', FAKE_RUNC_ERROR: 'container not running' });
  const e1 = s.execPid();
  await s.addExec('e1');
  await s.service.start('ns', 'c1', 'e1');
  s.exits.emit(e1, 0);
  await s.published('/tasks/exit e1');
  await assert.rejects(s.service.kill('ns', 'c1', 'e1', 9, false), isCode(Code.NOT_FOUND));
  s.exits.emit(s.initPid, 0);
  await s.published('/tasks/exit c1');
  await assert.rejects(s.service.kill('ns', 'c1', '', 9, false), isCode(Code.NOT_FOUND));
  const before = s.sink.topics.length;
  await s.service.delete('ns', 'c1', 'e1');
  await s.service.delete('ns', 'c1', '');
  await assert.rejects(s.service.kill('ns', 'c1', '', 9, false), isCode(Code.NOT_FOUND));
  assert.deepEqual(s.sink.topics.slice(before), ['/tasks/delete']);
});

test('operations on one process are serialised: a Delete during Start sees the running process', async () => {
  const s = await created();
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  const deleting = s.service.delete('ns', 'c1', '');
  const again = s.service.start('ns', 'c1', '');
  start.release();
  await starting;
  await assert.rejects(deleting, /cannot delete a running process/);
  await assert.rejects(again, /cannot start a running process/);
  assert.deepEqual(
    s.runcCalls().filter((c) => c !== 'create'),
    ['start'],
    'runc start ran once, runc delete never'
  );
});

test('ResizePty consults the exec state table: a stopped exec cannot be resized, the init always answers', async () => {
  const s = await started();
  const e1 = s.execPid();
  await s.addExec('e1');
  await s.service.start('ns', 'c1', 'e1');
  s.exits.emit(e1, 0);
  await s.published('/tasks/exit e1');
  assert.throws(() => s.service.resizePty('ns', 'c1', 'e1', 80, 24), /cannot resize a stopped container/);
  s.service.resizePty('ns', 'c1', '', 80, 24);
});

test('an init that exits while a failing runc start runs: the Start fails and the exit is still published', async () => {
  const s = await created({ FAKE_RUNC_FAIL: 'start', FAKE_RUNC_ERROR: 'container not running' });
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  s.exits.emit(s.initPid, 137);
  start.release();
  await assert.rejects(starting, /OCI runtime start failed/);
  await s.published('/tasks/exit c1');
  assert.deepEqual(s.sink.topics, ['/tasks/create', '/tasks/exit c1']);
  assert.equal(s.service.state('ns', 'c1', '').status, STATUS.STOPPED);
});

test('a Kill queued behind a Start leaves the queue when its request is cancelled', async () => {
  const s = await created();
  const start = s.hold('start');
  const starting = s.service.start('ns', 'c1', '');
  await start.held();
  const abort = new AbortController();
  const killing = s.service.kill('ns', 'c1', '', 9, false, { signal: abort.signal });
  abort.abort(new Error('context canceled'));
  await assert.rejects(killing, /context canceled/);
  start.release();
  await starting;
  assert.ok(!s.runcCalls().includes('kill'), 'the cancelled Kill never ran runc');
});

test('a second Start of a running exec is refused and does not release its Wait callers', async () => {
  const s = await started();
  const e1 = s.execPid();
  await s.addExec('e1');
  await s.service.start('ns', 'c1', 'e1');
  let waited = false;
  const waiting = s.service.wait('ns', 'c1', 'e1').then(() => {
    waited = true;
  });
  await assert.rejects(s.service.start('ns', 'c1', 'e1'), /cannot start a running process/);
  await new Promise((r) => setImmediate(r));
  assert.equal(waited, false, 'Wait still waits for the exit');
  s.exits.emit(e1, 7);
  await waiting;
  assert.equal((await s.service.wait('ns', 'c1', 'e1')).exit_status, 7);
});
