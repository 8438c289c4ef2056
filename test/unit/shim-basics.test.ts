// Flags, socket addresses, runtime options and the state tables: the parts of the shim that need
// no containerd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseFlags, FlagError } from '../../src/shim/flags';
import { socketPath, groupKey, RUNTIME_NAME } from '../../src/shim/address';
import { isValidIdentifier } from '../../src/sys/identifiers';
import { optionsFromToml, decodeOptions } from '../../src/task/options';
import { optionsJson } from '../../src/task/bundle-files';
import {
  initStateMachine,
  execStateMachine,
  type InitState,
  type InitOp,
  type ExecState,
  type ExecOp,
} from '../../src/task/state';

const checkInit = (s: InitState, op: InitOp) => initStateMachine(s).check(op);
const checkExec = (s: ExecState, op: ExecOp) => execStateMachine(s).check(op);
import { encodeDeleteResponse } from '../../src/shim/delete';
import { containerd, google, runtimeoptions } from '../../src/gen/proto';
import { formatLine } from '../../src/sys/logger';
import { spareTarget } from '../../src/shim/spare';

test('flags: the argv containerd 1.6 passes to start and delete', () => {
  const f = parseFlags([
    '-namespace',
    'default',
    '-address',
    '/run/containerd/containerd.sock',
    '-publish-binary',
    '/usr/bin/containerd',
    '-id',
    'c1',
    '-debug',
    'start',
  ]);
  assert.equal(f.namespace, 'default');
  assert.equal(f.address, '/run/containerd/containerd.sock');
  assert.equal(f.publishBinary, '/usr/bin/containerd');
  assert.equal(f.id, 'c1');
  assert.equal(f.debug, true);
  assert.equal(f.action, 'start');
  const d = parseFlags(['--namespace=k8s.io', '-id=x', '-bundle', '/b', 'delete']);
  assert.equal(d.namespace, 'k8s.io');
  assert.equal(d.bundle, '/b');
  assert.equal(d.action, 'delete');
  assert.equal(parseFlags(['-namespace', 'n', '-id', 'x']).action, '');
  assert.equal(parseFlags(['-v']).version, true);
  assert.equal(parseFlags(['-info']).info, true);
  assert.throws(() => parseFlags(['-bogus']), FlagError);
  assert.throws(() => parseFlags(['-id']), /needs an argument/);
});

test('address: sha256 of address/ns/runtime/group under /run/containerd/s, never a runc shim path', () => {
  const p = socketPath('/run/containerd/containerd.sock', 'default', 'c1');
  const ours = createHash('sha256').update(`/run/containerd/containerd.sock/default/${RUNTIME_NAME}/c1`).digest('hex');
  const runcs = createHash('sha256').update('/run/containerd/containerd.sock/default/c1').digest('hex');
  assert.equal(p, `/run/containerd/s/${ours}`);
  assert.notEqual(path.basename(p), runcs);
  assert.equal(socketPath('/run/containerd//containerd.sock/', 'default', 'c1'), p, 'cleaned like Go path.Join');
  assert.equal(groupKey('c2', { 'io.kubernetes.cri.sandbox-id': 'pod' }), 'pod');
  assert.equal(groupKey('c2', { 'io.containerd.tsshim.v2.group': 'g', 'io.kubernetes.cri.sandbox-id': 'pod' }), 'g');
  assert.equal(groupKey('c2', {}), 'c2');
});

test('identifiers: containerd rules, no traversal', () => {
  for (const ok of ['a', 'c1', 'k8s.io', 'a-b_c.d', 'x'.repeat(76)]) assert.ok(isValidIdentifier(ok), ok);
  for (const bad of ['', '../x', 'a/b', '.a', 'a..b', 'a-', 'x'.repeat(77), 'a b', 'é'])
    assert.ok(!isValidIdentifier(bad), bad);
});

test('options: TOML file with containerd-style and snake_case keys; bad types rejected', () => {
  const o = optionsFromToml(
    'BinaryName = "crun"\nSystemdCgroup = false\nio_uid = 1000\nRoot = "/run/x"\nper_node = true\n',
    't'
  );
  assert.equal(o.binaryName, 'crun');
  assert.equal(o.ioUid, 1000);
  assert.equal(o.root, '/run/x');
  assert.equal(o.perNode, true);
  assert.throws(() => optionsFromToml('BinaryName = 3', 't'), /BinaryName must be a string/);
  assert.throws(() => optionsFromToml('BinaryName = ', 't'), /invalid runtime options file/);
});

test('options: typed runc Options, runtimeoptions with config_path, unknown types', () => {
  const runc = containerd.runc.v1.Options.encode({
    binary_name: 'runc2',
    no_pivot_root: true,
    shim_cgroup: '/s',
  }).finish();
  const o = decodeOptions({ type_url: 'containerd.runc.v1.Options', value: runc });
  assert.equal(o.binaryName, 'runc2');
  assert.equal(o.noPivotRoot, true);
  assert.equal(o.shimCgroup, '/s');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-opts-'));
  fs.writeFileSync(path.join(dir, 'o.toml'), 'BinaryName = "crun"\n');
  const generic = runtimeoptions.v1.Options.encode({ type_url: 'x', config_path: path.join(dir, 'o.toml') }).finish();
  assert.equal(decodeOptions({ type_url: 'runtimeoptions.v1.Options', value: generic }).binaryName, 'crun');
  const missing = runtimeoptions.v1.Options.encode({ config_path: path.join(dir, 'none.toml') }).finish();
  assert.throws(
    () => decodeOptions({ type_url: 'runtimeoptions.v1.Options', value: missing }),
    /cannot read runtime options file/
  );
  assert.equal(decodeOptions({ type_url: 'example.Other', value: new Uint8Array([1, 2]) }).binaryName, '');
  assert.equal(decodeOptions(null).binaryName, '');
  assert.equal(optionsJson(o), '{"no_pivot_root":true,"shim_cgroup":"/s","binary_name":"runc2"}');
  fs.rmSync(dir, { recursive: true });
});

test('state tables: the Go shim errors for illegal transitions', () => {
  assert.throws(() => checkInit('created', 'pause'), /cannot pause task in created state/);
  assert.throws(() => checkInit('running', 'delete'), /cannot delete a running process/);
  assert.throws(() => checkInit('paused', 'exec'), /cannot exec in a paused state/);
  assert.throws(() => checkInit('stopped', 'update'), /cannot update a stopped container/);
  assert.throws(() => checkInit('created-checkpoint', 'exec'), /cannot exec in a created state/);
  assert.doesNotThrow(() => checkInit('paused', 'resume'));
  assert.doesNotThrow(() => checkInit('stopped', 'delete'));
  assert.throws(() => checkExec('running', 'delete'), /cannot delete a running process/);
  assert.throws(() => checkExec('stopped', 'resize'), /cannot resize a stopped container/);
  assert.doesNotThrow(() => checkExec('created', 'delete'));
  // Each allowed operation names its target state.
  assert.equal(checkInit('created-checkpoint', 'start'), 'running');
  assert.equal(checkInit('running', 'pause'), 'paused');
  assert.equal(checkInit('paused', 'exit'), 'stopped');
  assert.equal(checkInit('running', 'update'), 'running');
  assert.equal(checkExec('stopped', 'delete'), 'deleted');
  // deletedState.Kill wraps errdefs.ErrNotFound in Go.
  assert.throws(
    () => checkInit('deleted', 'kill'),
    (e: any) => e.kind === 'not-found' && e.message === 'cannot kill a deleted process: not found'
  );
});

test('delete: the hand-encoded DeleteResponse decodes with the generated type', () => {
  const bytes = encodeDeleteResponse(1234, 137, 1_700_000_000_123);
  const d = containerd.task.v2.DeleteResponse.decode(bytes);
  assert.equal(d.pid, 1234);
  assert.equal(d.exit_status, 137);
  assert.equal(Number(d.exited_at!.seconds), 1_700_000_000);
  assert.equal(d.exited_at!.nanos, 123_000_000);
  const same = containerd.task.v2.DeleteResponse.encode({
    pid: 1234,
    exit_status: 137,
    exited_at: { seconds: 1_700_000_000, nanos: 123_000_000 },
  }).finish();
  assert.deepEqual(Buffer.from(bytes), Buffer.from(same));
  assert.ok(google.protobuf.Timestamp);
});

test('logger: logrus text format, quoted values, bounded line length', () => {
  const line = formatLine(
    'warn',
    'event not delivered',
    { id: 'c1', error: new Error('dial: no such file') },
    new Date('2026-01-02T03:04:05.678Z')
  );
  assert.equal(
    line,
    'time="2026-01-02T03:04:05.678Z" level=warning msg="event not delivered" id=c1 error="dial: no such file"\n'
  );
  assert.ok(Buffer.byteLength(formatLine('info', 'x'.repeat(10000), {})) <= 4096);
});

test('spares: two in the pool while starts recently had to wait for one, else one', () => {
  const pool = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-pool-'));
  try {
    assert.equal(spareTarget(pool), 1);
    fs.writeFileSync(path.join(pool, '.starved'), '');
    assert.equal(spareTarget(pool), 2);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(path.join(pool, '.starved'), old, old);
    assert.equal(spareTarget(pool), 1, 'the burst is over');
    assert.equal(spareTarget(path.join(pool, 'missing')), 1);
  } finally {
    fs.rmSync(pool, { recursive: true, force: true });
  }
});
