import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  cgroupForPid,
  cgroupFromSpecPath,
  cgroupPathFromSpec,
  detectCgroupMode,
  expandSlice,
  parseMountinfo,
  parseProcCgroup,
  resolveV1Paths,
} from '../../src/task/cgroups/discovery';

const V1 = resolve(__dirname, '../../../test/fixtures/cgroup-v1');
const V1_ROOT = join(V1, 'sys/fs/cgroup');
const V2_ROOT = resolve(__dirname, '../../../test/fixtures/cgroup-v2');

test('parseProcCgroup splits id, controllers and path (path may contain colons)', () => {
  const e = parseProcCgroup('2:cpu,cpuacct:/a/b\n9:name=systemd:/x:y\n0::/init.scope\n');
  assert.deepEqual(e, [
    { id: 2, controllers: ['cpu', 'cpuacct'], path: '/a/b' },
    { id: 9, controllers: ['name=systemd'], path: '/x:y' },
    { id: 0, controllers: [], path: '/init.scope' },
  ]);
  assert.throws(() => parseProcCgroup('garbage\n'), /invalid cgroup entry/);
});

test('parseMountinfo reads root, mount point, type and super options (with optional fields and escapes)', () => {
  const m = parseMountinfo(readFileSync(join(V1, 'proc/self/mountinfo'), 'utf8'));
  const cpu = m.find((x) => x.superOptions.includes('cpuacct'));
  assert.deepEqual(cpu, {
    root: '/',
    mountPoint: '/sys/fs/cgroup/cpu,cpuacct',
    fsType: 'cgroup',
    superOptions: ['rw', 'cpu', 'cpuacct'],
  });
  const freezer = m.find((x) => x.superOptions.includes('freezer'));
  assert.equal(freezer?.root, '/default');
  const esc = parseMountinfo('50 31 0:40 /a\\040b /mnt/x\\040y rw shared:3 master:1 - cgroup cgroup rw,pids\n');
  assert.deepEqual(esc[0], { root: '/a b', mountPoint: '/mnt/x y', fsType: 'cgroup', superOptions: ['rw', 'pids'] });
});

test('resolveV1Paths makes paths relative to the hierarchy mount root (nested) and keeps existing dirs', () => {
  const mounts = parseMountinfo(readFileSync(join(V1, 'proc/self/mountinfo'), 'utf8'));
  const entries = parseProcCgroup(
    '6:freezer:/default/ctr1\n4:memory:/default/ctr1\n2:cpu,cpuacct:/default/ctr1\n9:name=systemd:/default/ctr1\n'
  );
  const seen: string[] = [];
  const paths = resolveV1Paths(entries, mounts, '/sys/fs/cgroup', (p) => {
    seen.push(p);
    return !p.includes('systemd');
  });
  assert.deepEqual(paths, {
    freezer: '/sys/fs/cgroup/freezer/ctr1', // mount root is /default
    memory: '/sys/fs/cgroup/memory/default/ctr1',
    cpu: '/sys/fs/cgroup/cpu,cpuacct/default/ctr1', // the real co-mounted dir, no symlink needed
    cpuacct: '/sys/fs/cgroup/cpu,cpuacct/default/ctr1',
  });
  assert.ok(seen.includes('/sys/fs/cgroup/systemd/default/ctr1'));
});

test('cgroupForPid on the v1 fixture: one dir per existing controller', () => {
  const h = cgroupForPid(4242, V1_ROOT, { procRoot: join(V1, 'proc'), version: 1 });
  assert.ok(h && h.version === 1);
  const expected: Record<string, string> = {};
  for (const c of ['rdma', 'hugetlb', 'pids', 'blkio', 'memory', 'cpu', 'cpuacct'])
    expected[c] = join(V1_ROOT, c, 'default/ctr1');
  assert.deepEqual(h.paths, expected); // freezer, devices, cpuset, systemd have no dir in the fixture
  assert.equal(cgroupForPid(999999, V1_ROOT, { procRoot: join(V1, 'proc') }), null);
});

test('cgroupForPid v2: the 0:: line under the unified root', () => {
  const h = cgroupForPid(4242, V2_ROOT, { procRoot: join(V1, 'proc'), version: 2 });
  assert.deepEqual(h, { version: 2, dir: V2_ROOT });
});

test('live: this host is hybrid and our own cgroup resolves to v1 controller dirs', () => {
  assert.equal(detectCgroupMode('/sys/fs/cgroup'), 'hybrid');
  const h = cgroupForPid(process.pid);
  assert.ok(h && h.version === 1, 'expected a v1 handle');
  const own = parseProcCgroup(readFileSync('/proc/self/cgroup', 'utf8'));
  const dirOf = (c: string) =>
    join('/sys/fs/cgroup', c, own.find((e) => e.controllers.includes(c))!.path).replace(/\/$/, '');
  assert.equal(h.paths.memory, dirOf('memory'));
  assert.equal(h.paths.cpuacct, dirOf('cpuacct'));
  assert.equal(h.paths.pids, dirOf('pids'));
});

test('spec cgroupsPath: plain and systemd forms', () => {
  assert.equal(cgroupPathFromSpec('/default/ctr1'), '/default/ctr1');
  assert.equal(cgroupPathFromSpec('default/ctr1'), '/default/ctr1');
  assert.equal(cgroupPathFromSpec('system.slice:cri-containerd:abc'), '/system.slice/cri-containerd-abc.scope');
  assert.equal(
    cgroupPathFromSpec('kubepods-besteffort-pod1.slice:cri-containerd:abc'),
    '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope'
  );
  assert.equal(cgroupPathFromSpec(':docker:abc', true), '/system.slice/docker-abc.scope');
  assert.equal(expandSlice('-.slice'), '/');
  assert.throws(() => expandSlice('a--b.slice'), /invalid slice/);
  const h = cgroupFromSpecPath('/default/ctr1', V1_ROOT, { version: 1 });
  assert.ok(h && h.version === 1);
  assert.deepEqual(Object.keys(h.paths).sort(), ['blkio', 'cpu', 'cpuacct', 'hugetlb', 'memory', 'pids', 'rdma']);
  assert.deepEqual(cgroupFromSpecPath('/default/ctr1', V2_ROOT, { version: 2 }), {
    version: 2,
    dir: join(V2_ROOT, 'default/ctr1'),
  });
  assert.equal(cgroupFromSpecPath('/nope', V2_ROOT, { version: 2 }), null);
});
