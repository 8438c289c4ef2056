// In-place upgrade building blocks (src/upgrade/, README "Upgrading tsshim"): the versioned state
// schema, a ttrpc connection handed from one server to another with its unread bytes and a
// replayed call, and a container output copy stopped between two chunks and taken up again.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import {
  ACCEPTED_STATE_VERSIONS,
  encodeState,
  parseState,
  STATE_VERSION,
  stateFds,
  StateVersionError,
  writeStateFile,
  type UpgradeState,
} from '../../src/upgrade/state';
import { replayableCall } from '../../src/upgrade/capture';
import { DRY_RUN_FAILED_MARK, probeAnswer, probeBuild, PROBE_MARK } from '../../src/upgrade/probe';
import { dryRunRestore } from '../../src/upgrade/restore';
import { ioFds, type IoState } from '../../src/task/io';
import { encodeFrame, FrameDecoder, MessageType } from '../../src/ttrpc/channel';
import { decodeResponse, encodeRequest } from '../../src/ttrpc/codec';
import { Server } from '../../src/ttrpc';
import { pump, type PumpControl } from '../../src/task/io/pump';
import { socketOnFd } from '../../src/task/io/fds';
import { dupCloexec, pipe2 } from '../../src/sys/libc';
import { tempSocketDir } from '../support/raw-peer';

const tmp = tempSocketDir('upgrade-');
after(() => tmp.remove());

function sampleState(over: Partial<UpgradeState> = {}): UpgradeState {
  const io: IoState = {
    kind: 'pipe',
    copies: [
      {
        name: 'stdout',
        done: false,
        srcFd: 20,
        dst: { kind: 'socket', fd: 21 },
        pending: Buffer.from('12\n').toString('base64'),
        dropping: false,
        keepReaderFd: 22,
      },
      { name: 'stderr', done: true, srcFd: -1, dst: { kind: 'discard' }, pending: '', dropping: false },
    ],
    stdin: {
      name: 'stdin',
      done: false,
      srcFd: 23,
      dst: { kind: 'socket', fd: 24 },
      pending: '',
      dropping: false,
      keepAliveFd: 25,
    },
  };
  return {
    version: STATE_VERSION,
    from: { version: '0.1.0', revision: 'abc', entry: '/old/dist/src/daemon/boot.js' },
    to: { entry: '/new/dist/src/daemon/boot.js', version: '0.2.0' },
    writtenAt: 1,
    daemon: {
      startedAt: 2,
      socket: '/run/s',
      namespace: 'ns',
      group: 'g',
      listenFd: 10,
      everCreated: true,
      shutdownRequested: false,
      spareRequested: true,
    },
    connections: [
      { fd: 11, lastRequestId: 7, input: '' },
      { fd: 12, lastRequestId: 0, input: 'AAE=' },
    ],
    upgradeCall: { connection: 1, streamId: 3 },
    containers: [
      {
        id: 'c1',
        namespace: 'ns',
        bundle: '/b/c1',
        rootfs: [],
        stdio: { stdin: '/i', stdout: '/o', stderr: '', terminal: false },
        checkpoint: '',
        parentCheckpoint: '',
        options: {} as never,
        createdAt: 3,
        runningExecs: 0,
        init: {
          execId: '',
          stdio: { stdin: '/i', stdout: '/o', stderr: '', terminal: false },
          pid: 100,
          state: 'running',
          exit: null,
          reaped: null,
          watched: true,
          io,
        },
        execs: [],
        oom: {
          cgroup: { version: 1, paths: { memory: '/sys/fs/cgroup/memory/ns/c1' } },
          watch: { efd: 30, unchecked: 0 },
        },
      },
    ],
    events: { pending: [], sent: 4, retries: 0, discarded: 0, journalFailures: 0 },
    counters: { reaped: 1, exitsPublished: 1 },
    rpc: [['Create', { count: 1, errors: 0, totalMs: 5, buckets: [1] }]],
    ...over,
  };
}

test('upgrade state: round trip; every handed-over fd listed once', () => {
  const s = sampleState();
  assert.deepEqual(parseState(encodeState(s)), s);
  assert.deepEqual(
    stateFds(s, ioFds).sort((a, b) => a - b),
    [10, 11, 12, 20, 21, 22, 23, 24, 25, 30],
    'the listener, connections, IO and the v1 OOM eventfd'
  );
  assert.ok(ACCEPTED_STATE_VERSIONS.includes(STATE_VERSION), 'a build reads what it writes');
});

test('upgrade state: version 1 (before OOM watches were handed over) is still read', () => {
  const v1 = sampleState();
  delete v1.containers[0].oom;
  const s = parseState(JSON.stringify({ ...v1, version: 1 }));
  assert.equal(s.version, STATE_VERSION);
  assert.equal(s.containers[0].oom, undefined, 'no OOM watch: the new build watches anew');
  assert.deepEqual(stateFds(s, ioFds), stateFds(v1, ioFds));
});

test('upgrade state: a newer version is refused clearly, an unknown or malformed one too', () => {
  const newer = JSON.stringify({ ...sampleState(), version: STATE_VERSION + 1 });
  assert.throws(
    () => parseState(newer),
    (e: unknown) => e instanceof StateVersionError && /newer than this build reads.*downgrade/.test(e.message)
  );
  assert.throws(() => parseState(JSON.stringify({ ...sampleState(), version: 'one' })), StateVersionError);
  assert.throws(() => parseState(JSON.stringify({ containers: [] })), StateVersionError);
  assert.throws(() => parseState('{"version":1'), /not JSON/);
  assert.throws(() => parseState(JSON.stringify({ ...sampleState(), daemon: {} })), /listenFd/);
  assert.throws(() => parseState(JSON.stringify({ ...sampleState(), connections: [{ fd: 'x' }] })), /connections/);
});

test('upgrade state file: 0600, written anew, never through a planted symlink', () => {
  const file = tmp.path('upgrade-1.json');
  fs.writeFileSync(file, 'stale');
  writeStateFile(file, sampleState());
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(parseState(fs.readFileSync(file, 'utf8')), sampleState());
  const victim = tmp.path('victim');
  fs.writeFileSync(victim, 'keep');
  const link = tmp.path('upgrade-2.json');
  fs.symlinkSync(victim, link);
  writeStateFile(link, sampleState()); // the link itself is replaced
  assert.equal(fs.readFileSync(victim, 'utf8'), 'keep');
  assert.ok(!fs.lstatSync(link).isSymbolicLink());
});

test('upgrade: only waiting calls are replayed by the next process', () => {
  assert.ok(replayableCall('containerd.task.v2.Task', 'Wait'));
  assert.ok(replayableCall('containerd.task.v3.Task', 'Wait'));
  assert.ok(replayableCall('tsshim.v1.Shim', 'Stats'));
  for (const m of ['Start', 'Kill', 'Exec', 'Delete', 'Create', 'Shutdown'])
    assert.ok(!replayableCall('containerd.task.v2.Task', m), m);
});

// ---- ttrpc hand-over ----------------------------------------------------------------------

const SVC = 'test.v1.Up';

function request(id: number, method: string, payload: string): Buffer {
  return encodeFrame(
    id,
    MessageType.REQUEST,
    0,
    encodeRequest({ service: SVC, method, payload: Buffer.from(payload) })
  );
}

test('ttrpc hand-over: a held connection moves to another server with its unread bytes; a waiting call is replayed, each call answered once', async () => {
  const replies = new Map<number, string[]>();
  const old = new Server({ replayable: (_s, m) => m === 'Wait' });
  old.register(SVC, { Echo: (p) => p, Wait: () => new Promise<Uint8Array>(() => {}) });
  const path = tmp.path('h.sock');
  const listener = net.createServer();
  await new Promise<void>((r) => listener.listen(path, r));
  old.serve(listener);
  const client = net.connect(path);
  await new Promise((r) => client.once('connect', r));
  let got = 0;
  const dec = new FrameDecoder({
    frame: (h, data) => {
      const r = decodeResponse(data);
      replies.set(h.streamId, [...(replies.get(h.streamId) ?? []), Buffer.from(r.payload ?? []).toString()]);
      got++;
    },
    oversize: () => assert.fail('oversize'),
  });
  client.on('data', (d) => dec.push(d));
  const until = async (n: number) => {
    for (let i = 0; got < n && i < 400; i++) await new Promise((r) => setTimeout(r, 5));
  };
  client.write(request(1, 'Wait', 'w'));
  client.write(request(3, 'Echo', 'before'));
  await until(1);
  // Half a request, read by the old server before it holds; the other half and one more after.
  const five = request(5, 'Echo', 'split');
  client.write(five.subarray(0, 7));
  await new Promise((r) => setTimeout(r, 50));
  old.hold();
  client.write(Buffer.concat([five.subarray(7), request(7, 'Echo', 'after')]));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    old.inFlight().flatMap((c) => c.calls.map((k) => [k.method, k.replayable])),
    [['Wait', true]]
  );
  const [{ handover }] = old.handover(() => new Set());
  assert.equal(handover.lastRequestId, 0, 'the replayed Wait (id 1) must be accepted again');
  assert.ok(handover.input.length > 7, 'the Wait request and the half frame');

  const next = new Server();
  next.register(SVC, { Echo: (p) => Buffer.concat([Buffer.from('new:'), p]), Wait: () => Buffer.from('replayed') });
  next.adopt(new net.Socket({ fd: dupCloexec(handover.fd), readable: true, writable: true }), handover);
  await until(4);
  assert.deepEqual(Object.fromEntries(replies), { 1: ['replayed'], 3: ['before'], 5: ['new:split'], 7: ['new:after'] });
  client.destroy();
  // The old server's connection was detached (its fd is the new process's now): only its listener goes.
  listener.close();
  await next.shutdown(100);
});

// ---- container output copy ------------------------------------------------------------------

test('output copy: paused between two chunks, detached, taken up on the same fd: nothing lost, nothing twice', async () => {
  const [r, w] = pipe2();
  const out: Buffer[] = [];
  const sink = () =>
    new Writable({
      write: (chunk, _e, cb) => {
        out.push(Buffer.from(chunk));
        cb();
      },
    });
  const control: Partial<PumpControl> = {};
  void pump(socketOnFd(r, 'read'), sink(), { name: 'stdout', control });
  const text = () => Buffer.concat(out).toString();
  const waitFor = async (s: string) => {
    for (let i = 0; !text().endsWith(s) && i < 400; i++) await new Promise((res) => setTimeout(res, 5));
  };
  fs.writeSync(w, 'one\n');
  await waitFor('one\n');
  control.pause!();
  fs.writeSync(w, 'two\n'); // stays in the pipe: the copy reads no more
  await new Promise((res) => setTimeout(res, 50));
  assert.ok(control.flushed!());
  const pending = control.detach!();
  const next: Partial<PumpControl> = {};
  const dst = sink();
  if (pending.length) dst.write(pending);
  void pump(socketOnFd(dupCloexec(r), 'read'), dst, { name: 'stdout', control: next });
  fs.writeSync(w, 'three\n');
  await waitFor('three\n');
  assert.equal(text(), 'one\ntwo\nthree\n');
  fs.closeSync(w);
});

test('upgrade probe: the daemon keeps serving while the new build is probed (the probe does not block the loop)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-probe-'));
  try {
    // A build that takes a while to answer, as a cold Node start of a real one does.
    const entry = path.join(dir, 'boot.js');
    const answer = { ...probeAnswer(), version: 'probe-test' };
    fs.writeFileSync(
      entry,
      `setTimeout(() => console.log(${JSON.stringify(PROBE_MARK + JSON.stringify(answer))}), 300);\n`
    );
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const info = await probeBuild(entry, false).finally(() => clearInterval(timer));
    assert.equal(info.version, 'probe-test');
    assert.ok(ticks > 0, 'timers ran while the probe was out');
    fs.writeFileSync(entry, 'syntax error here\n');
    await assert.rejects(probeBuild(entry, false), /cannot be loaded: .*SyntaxError/);
    await assert.rejects(probeBuild(path.join(dir, 'missing.js'), false), /the new build is missing/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- crashes of the new build (README "Upgrading tsshim", Fallback) ------------------------

/** This checkout's compiled shim entry (the unbundled main.js: the same code as the bundle). */
const MAIN_JS = path.join(__dirname, '..', '..', 'src', 'daemon', 'main.js');

test("upgrade dry run: the restore's object graph is built from the state, taking over no fd", () => {
  assert.deepEqual(dryRunRestore(encodeState(sampleState())), { containers: 1 });
  assert.throws(
    () => dryRunRestore(JSON.stringify({ ...sampleState(), version: STATE_VERSION + 1 })),
    StateVersionError
  );
  assert.throws(() => dryRunRestore(JSON.stringify({ ...sampleState(), containers: 'x' })), /containers missing/);
});

test('upgrade probe: the new build runs its restore on the state first; a throw, an exit, an abort there refuse the build with the reason', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-dry-'));
  try {
    const stateFile = path.join(dir, 'state.json');
    writeStateFile(stateFile, sampleState());
    // The real build: answers, runs the dry run on the state, says it went through.
    const info = await probeBuild(MAIN_JS, false, 20_000, stateFile);
    assert.equal(info.dryRun, true);
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ ...sampleState(), containers: 'x' }));
    await assert.rejects(
      probeBuild(MAIN_JS, false, 20_000, bad),
      /cannot restore this shim's state \(its restore failed in a dry run in the probe process, nothing was touched\): upgrade state: containers missing/
    );
    // Builds whose restore dies on this state: they answer the probe first, then end badly.
    const answer = JSON.stringify(PROBE_MARK + JSON.stringify({ ...probeAnswer(true), version: 'crashy' }));
    const build = (name: string, then: string) => {
      const entry = path.join(dir, `${name}.js`);
      fs.writeFileSync(entry, `console.log(${answer});\n${then}\n`);
      return entry;
    };
    const cases: [string, string, RegExp][] = [
      ['exit', 'process.exit(3);', /build crashy .*cannot restore this shim's state .*: exited with status 3$/],
      ['abort', 'process.abort();', /build crashy .*cannot restore this shim's state .*: killed by SIGABRT/],
      ['signal', 'process.kill(process.pid, "SIGSEGV");', /killed by SIGSEGV/],
      [
        'threw',
        `console.log(${JSON.stringify(DRY_RUN_FAILED_MARK)} + "boom"); process.exit(1);`,
        /nothing was touched\): boom$/,
      ],
    ];
    for (const [name, then, why] of cases)
      await assert.rejects(probeBuild(build(name, then), false, 20_000, stateFile), why, name);
    // Without a state to try, or from a build older than the dry run, only the answer counts.
    assert.equal((await probeBuild(build('nostate', 'process.exit(3);'), false)).version, 'crashy');
    const older = path.join(dir, 'older.js');
    const { dryRun: _none, ...olderAnswer } = { ...probeAnswer(), version: 'older' };
    fs.writeFileSync(older, `console.log(${JSON.stringify(PROBE_MARK + JSON.stringify(olderAnswer))});\n`);
    assert.equal((await probeBuild(older, false, 20_000, stateFile)).version, 'older');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('upgrade fallback: a process.exit() of the new build while it restores execs the previous build (same pid) with the state, its fds open', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-exitfb-'));
  try {
    const file = path.join(dir, 'upgrade-1.json');
    // The previous build: says what it was exec'd with (in a file: node marks its stdout close-on-exec).
    const previous = path.join(dir, 'previous.js');
    const said = path.join(dir, 'previous.out');
    fs.writeFileSync(
      previous,
      `const fs = require('fs');
const s = JSON.parse(fs.readFileSync(process.env.TSSHIM_UPGRADE_STATE, 'utf8'));
let open = true;
try { fs.fstatSync(s.daemon.listenFd); } catch { open = false; }
fs.writeFileSync(${JSON.stringify(said)}, JSON.stringify({ pid: process.pid, reason: s.fallbackReason, listenFdOpen: open, args: process.argv.slice(2) }));
`
    );
    const lib = (m: string) => JSON.stringify(path.join(__dirname, '..', '..', 'src', m));
    // The new build, restoring: arms the exit fallback, then exits (disarmed first: a plain exit).
    const newBuild = (disarm: boolean) => `
const fs = require('fs');
const { exitFallback, fallBack } = require(${lib('upgrade/restore.js')});
const { writeStateFile } = require(${lib('upgrade/state.js')});
const { nullLogger } = require(${lib('sys/logger.js')});
const listenFd = fs.openSync(${JSON.stringify(previous)}, 'r'); // close-on-exec, as libuv's
const state = ${JSON.stringify(sampleState({ connections: [], upgradeCall: null, containers: [] }))};
state.from.entry = ${JSON.stringify(previous)};
state.daemon.listenFd = listenFd;
writeStateFile(${JSON.stringify(file)}, state);
const flags = { namespace: 'ns', id: 'c1', address: '/run/containerd.sock', debug: false };
const disarm = exitFallback((why) => fallBack(${JSON.stringify(file)}, state, why, flags, false, nullLogger));
console.log(JSON.stringify({ pid: process.pid }));
${disarm ? 'disarm();' : ''}
process.exit(3);
`;
    const r = spawnSync(process.execPath, ['-e', newBuild(false)], { encoding: 'utf8', env: process.env });
    const lines = [JSON.parse(r.stdout), JSON.parse(fs.readFileSync(said, 'utf8'))];
    assert.equal(r.status, 0, 'the previous build ran to its end: its exit status, not the 3');
    assert.equal(lines[1].pid, lines[0].pid, 'same pid: exec, not a new process');
    assert.equal(lines[1].reason, 'the new build exited with status 3 while restoring');
    assert.ok(lines[1].listenFdOpen, 'the handed-over fd survived the exec from the exit handler');
    assert.deepEqual(lines[1].args, ['-namespace', 'ns', '-id', 'c1', '-address', '/run/containerd.sock']);
    fs.rmSync(said);
    const plain = spawnSync(process.execPath, ['-e', newBuild(true)], { encoding: 'utf8', env: process.env });
    assert.equal(plain.status, 3, 'disarmed (restored): an exit is an exit');
    assert.ok(!fs.existsSync(said), 'and no exec');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
