// Pids from the container's cgroup (src/task/cgroups/pids.ts) instead of `runc ps`: the walk runc's
// GetAllPids does (cgroup.procs of the cgroup and of every descendant, parents first, children in
// lexical order), on a fake cgroup tree; and Container.pids choosing between the cgroup and runc.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pidsDirOf, readCgroupPids } from '../../src/task/cgroups/pids';
import { Container } from '../../src/task/container';
import { defaultOptions } from '../../src/task/options';
import { nullLogger } from '../../src/sys/logger';
import type { RunOptions, RunResult } from '../../src/sys/reaper';
import type { ProcessRunner } from '../../src/task/ports';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-cgroup-pids-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let seq = 0;
/** A cgroup directory tree: { procs: 'cgroup.procs text', children: { name: subtree }, files: [names] }. */
interface Tree {
  procs?: string;
  children?: Record<string, Tree>;
  files?: string[];
}
function makeTree(t: Tree, dir = path.join(tmp, `cg-${seq++}`)): string {
  fs.mkdirSync(dir, { recursive: true });
  if (t.procs !== undefined) fs.writeFileSync(path.join(dir, 'cgroup.procs'), t.procs);
  for (const f of t.files ?? []) fs.writeFileSync(path.join(dir, f), '0\n');
  for (const [name, sub] of Object.entries(t.children ?? {})) makeTree(sub, path.join(dir, name));
  return dir;
}

test('the cgroup and all its descendants, parents first, children in lexical (byte) order', () => {
  const dir = makeTree({
    procs: '12\n5\n',
    files: ['tasks', 'notify_on_release', 'zz-file'],
    children: {
      b: { procs: '70\n' },
      a: { procs: '30\n', children: { x: { procs: '90\n91\n' }, 'x-': { procs: '' } } },
      B: { procs: '40\n' }, // uppercase sorts before lowercase, as Go's byte order has it
      é: { procs: '99\n' }, // non-ASCII after ASCII
    },
  });
  assert.deepEqual(readCgroupPids(dir), [12, 5, 40, 30, 90, 91, 70, 99]);
});

test('an empty cgroup has no pids; an empty line is skipped', () => {
  assert.deepEqual(readCgroupPids(makeTree({ procs: '' })), []);
  assert.deepEqual(readCgroupPids(makeTree({ procs: '\n7\n\n' })), [7]);
  assert.deepEqual(readCgroupPids(makeTree({ procs: '8' })), [8], 'no final newline');
});

test('a pid listed twice (moved during the walk, a v2 threaded subtree) is kept once, at its first place', () => {
  const dir = makeTree({ procs: '1\n', children: { a: { procs: '2\n3\n' }, b: { procs: '3\n1\n4\n' } } });
  assert.deepEqual(readCgroupPids(dir), [1, 2, 3, 4]);
});

test('anything unreadable or unparsable gives null (the caller asks runc)', () => {
  assert.equal(readCgroupPids(path.join(tmp, 'no-such-cgroup')), null, 'the cgroup is gone');
  assert.equal(readCgroupPids(makeTree({ procs: '1\n', children: { a: {} } })), null, 'a child without cgroup.procs');
  assert.equal(readCgroupPids(makeTree({ procs: '1\nabc\n' })), null);
  assert.equal(readCgroupPids(makeTree({ procs: '-1\n' })), null);
  assert.equal(readCgroupPids(makeTree({ procs: ' 1\n' })), null);
  assert.equal(readCgroupPids(makeTree({ procs: '99999999999999999999\n' })), null);
});

test('pidsDirOf: v1 walks the devices hierarchy (as runc does), v2 the unified directory', () => {
  assert.equal(pidsDirOf({ version: 1, paths: { memory: '/m/c', devices: '/d/c', pids: '/p/c' } }), '/d/c');
  assert.equal(pidsDirOf({ version: 1, paths: { memory: '/m/c' } }), null);
  assert.equal(pidsDirOf({ version: 2, dir: '/sys/fs/cgroup/x' }), '/sys/fs/cgroup/x');
});

// ---- Container.pids: the cgroup when it can, runc ps otherwise ------------------------------------

/** A runner that answers `runc ps --format json` with `[4242,4243]` and records every argv. */
class FakeRunner {
  calls: string[][] = [];
  run(_command: string, args: readonly string[], _opts?: RunOptions): Promise<RunResult> {
    this.calls.push([...args]);
    const stdout = Buffer.from(args.includes('ps') ? '[4242,4243]\n' : '');
    return Promise.resolve({ code: 0, signal: null, stdout, stderr: Buffer.alloc(0), pid: 1 });
  }
  spawn(): never {
    throw new Error('not used');
  }
  ps(): number {
    return this.calls.filter((a) => a.includes('ps')).length;
  }
}

function container(binaryName = '') {
  const bundle = fs.mkdtempSync(path.join(tmp, 'bundle-'));
  const runner = new FakeRunner();
  const c = new Container({
    id: 'c1',
    namespace: 'ns',
    bundle,
    rootfs: [],
    stdio: { stdin: '', stdout: '', stderr: '', terminal: false },
    checkpoint: '',
    parentCheckpoint: '',
    options: { ...defaultOptions(), binaryName },
    log: nullLogger,
    runner: runner as unknown as ProcessRunner,
    runcTimeoutMs: 10_000,
  });
  return { c, runner };
}

test('Container.pids reads the cgroup when the runtime is runc and the cgroup is known, with exec ids', async () => {
  const devices = makeTree({ procs: '100\n', children: { sub: { procs: '101\n102\n' } } });
  for (const binaryName of ['', 'runc', '/usr/local/sbin/runc']) {
    const { c, runner } = container(binaryName);
    const e = c.addExec('e1', { stdin: '', stdout: '', stderr: '', terminal: false }, { args: ['sh'], cwd: '/' });
    e.pid = 102;
    const pids = await c.pids(undefined, { version: 1, paths: { devices, memory: '/nowhere' } });
    assert.deepEqual(pids, [
      { pid: 100, execId: undefined },
      { pid: 101, execId: undefined },
      { pid: 102, execId: 'e1' },
    ]);
    assert.equal(runner.ps(), 0, `no runc ps (binary ${JSON.stringify(binaryName)})`);
    assert.deepEqual(await c.pids(undefined, { version: 2, dir: devices }), pids, 'v2: the unified directory');
  }
});

test('Container.pids runs runc ps without a cgroup, with an unreadable one, or for another runtime', async () => {
  const devices = makeTree({ procs: '100\n' });
  const viaRunc = [
    { pid: 4242, execId: undefined },
    { pid: 4243, execId: undefined },
  ];
  {
    const { c, runner } = container();
    assert.deepEqual(await c.pids(), viaRunc, 'no cgroup known');
    assert.deepEqual(await c.pids(undefined, { version: 1, paths: { memory: devices } }), viaRunc, 'no devices');
    const gone = { version: 1 as const, paths: { devices: path.join(tmp, 'removed') } };
    assert.deepEqual(await c.pids(undefined, gone), viaRunc, 'the cgroup is gone');
    assert.equal(runner.ps(), 3);
    assert.deepEqual(runner.calls[0].slice(-4), ['ps', '--format', 'json', 'c1']);
  }
  {
    const { c, runner } = container('/usr/bin/runsc');
    assert.deepEqual(await c.pids(undefined, { version: 1, paths: { devices } }), viaRunc, 'another runtime');
    assert.equal(runner.ps(), 1);
  }
});
