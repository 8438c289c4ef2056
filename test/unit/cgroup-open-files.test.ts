// Stats keeps a container's cgroup files open and reads them with pread at offset 0
// (src/task/cgroups/files.ts CgroupFiles): every read sees the file as it is now, Delete closes
// them, a process-wide bound caps them, and a cgroup removed (or recreated) under them is noticed.
import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import type { CgroupHandle } from '../../src/task/cgroups/discovery';
import { CgroupNotFoundError } from '../../src/task/cgroups/errors';
import { CgroupFiles, MAX_OPEN_CGROUP_FILES, openCgroupFileCount } from '../../src/task/cgroups/files';
import { collectMetrics, releaseCgroupFiles } from '../../src/task/cgroups/metrics';
import type { MetricsV1 } from '../../src/task/cgroups/stats-v1';
import { openFds } from '../support/proc';
import { rmdirRetry } from '../support/cgroup';

const FIX = resolve(__dirname, '../../../test/fixtures/cgroup-v1');
const ROOT = join(FIX, 'sys/fs/cgroup');
const opts = { procRoot: join(FIX, 'proc'), hugepagesDir: join(FIX, 'hugepages') };
const fixtureHandle = (): CgroupHandle => {
  const paths: Record<string, string> = {};
  for (const c of ['cpu', 'cpuacct', 'memory', 'pids', 'blkio', 'hugetlb', 'rdma'])
    paths[c] = join(ROOT, c, 'default/ctr1');
  return { version: 1, paths };
};

test('a kept-open file reads its current content on every call, with one descriptor, closed by close()', () => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'tsshim-cgfiles-'));
  const file = join(dir, 'pids.current');
  fs.writeFileSync(file, '1\n');
  const before = openFds();
  const files = new CgroupFiles();
  try {
    assert.equal(files.read(file), '1\n');
    const opened = openFds();
    assert.equal(opened.length, before.length + 1);
    fs.writeFileSync(file, '22\n'); // same inode, new content (shorter and longer than before)
    assert.equal(files.read(file), '22\n');
    fs.writeFileSync(file, '3\n');
    assert.equal(files.read(file), '3\n');
    const big = 'x'.repeat(100_000); // larger than the shared buffer
    fs.writeFileSync(file, big);
    assert.equal(files.read(file), big);
    assert.deepEqual(openFds(), opened, 'no descriptor per read');
    assert.equal(files.read(join(dir, 'missing')), null);
    assert.equal(files.size, 1);
  } finally {
    files.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(openFds(), before);
  assert.equal(files.size, 0);
});

test('a missing file is probed without an open (no exception) and read once it exists; one pread per read', () => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'tsshim-cgfiles-'));
  const file = join(dir, 'blkio.io_serviced_recursive');
  const files = new CgroupFiles();
  // The module object itself (files.ts's namespace import reads through to it): opens and reads counted.
  const realFs = createRequire(__filename)('node:fs') as typeof fs;
  const opens = mock.method(realFs, 'openSync');
  const reads = mock.method(realFs, 'readSync');
  const opened = () => opens.mock.calls.map((c) => String(c.arguments[0]));
  try {
    assert.equal(files.read(file), null);
    assert.equal(files.read(file), null);
    assert.equal(files.read(file), null);
    assert.deepEqual(opened(), [file], 'opened once; later calls probe with access()');
    fs.writeFileSync(file, '8:0 Read 1\n');
    assert.equal(files.read(file), '8:0 Read 1\n', 'read as soon as it exists');
    assert.equal(opened().length, 2);
    reads.mock.resetCalls();
    assert.equal(files.read(file), '8:0 Read 1\n');
    assert.deepEqual(
      reads.mock.calls.map((c) => c.result),
      [11],
      'one pread, no second one for EOF'
    );
    fs.rmSync(file);
    fs.writeFileSync(file, 'new inode\n'); // the kept descriptor still reads the old file
    assert.equal(files.size, 1);
  } finally {
    opens.mock.restore();
    reads.mock.restore();
    files.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('collectMetrics keeps the files of a handle open between calls; releaseCgroupFiles closes them', async () => {
  const before = openFds();
  const baseCount = openCgroupFileCount();
  const h = fixtureHandle();
  const first = await collectMetrics(h, opts);
  const afterFirst = openFds();
  assert.ok(afterFirst.length > before.length + 20, `files kept open (${afterFirst.length - before.length})`);
  assert.equal(openCgroupFileCount() - baseCount, afterFirst.length - before.length);
  const second = await collectMetrics(h, opts);
  assert.deepEqual(openFds(), afterFirst, 'the second call opens nothing');
  assert.deepEqual(second, first, 'the same answer from the open files');
  releaseCgroupFiles(h);
  assert.deepEqual(openFds(), before);
  assert.equal(openCgroupFileCount(), baseCount);
  releaseCgroupFiles(h); // twice is harmless
  releaseCgroupFiles(null);
});

test(`no more than MAX_OPEN_CGROUP_FILES (${MAX_OPEN_CGROUP_FILES}) descriptors over all containers; the least recently used close`, async () => {
  const before = openFds().length;
  const handles = Array.from({ length: 40 }, fixtureHandle); // ~30 files each
  for (const h of handles) {
    await collectMetrics(h, opts);
    assert.ok(openCgroupFileCount() <= MAX_OPEN_CGROUP_FILES, `${openCgroupFileCount()} open`);
  }
  assert.ok(openCgroupFileCount() > MAX_OPEN_CGROUP_FILES / 2, 'the bound is used, not far under');
  // The most recent one kept its files: a second call opens nothing.
  const open = openFds();
  await collectMetrics(handles[39], opts);
  assert.deepEqual(openFds(), open);
  // An evicted one reopens and answers the same.
  assert.deepEqual(await collectMetrics(handles[0], opts), await collectMetrics(fixtureHandle(), opts));
  for (const h of handles) releaseCgroupFiles(h);
  assert.equal(openFds().length, before + openCgroupFileCount(), 'only the fixtureHandle() above still open');
});

const canLive = process.getuid?.() === 0 && fs.existsSync('/sys/fs/cgroup/pids/cgroup.procs');

test(
  'live v1 pids cgroup: counts follow the cgroup; removed, Stats says NotFound and closes; recreated, read anew',
  { skip: !canLive && 'needs root and the v1 pids controller' },
  async () => {
    const dir = join('/sys/fs/cgroup/pids', `tsshim-test-${randomBytes(4).toString('hex')}`);
    fs.mkdirSync(dir);
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    const h: CgroupHandle = { version: 1, paths: { pids: dir } };
    const baseCount = openCgroupFileCount();
    try {
      const current = async () => ((await collectMetrics(h)) as { metrics: MetricsV1 }).metrics.pids!.current;
      assert.equal(await current(), 0);
      fs.writeFileSync(join(dir, 'cgroup.procs'), String(child.pid));
      assert.equal(await current(), 1, 'read through the open file: the kernel regenerates it');
      assert.equal(openCgroupFileCount() - baseCount, 2, 'pids.current and pids.max');
      child.kill('SIGKILL');
      await exited;
      assert.equal(await current(), 0);

      // A cgroup removed and made again under an open file: its reads fail (ENODEV), the path is opened anew.
      const files = new CgroupFiles();
      try {
        assert.equal(files.read(join(dir, 'pids.max')), 'max\n');
        await rmdirRetry(dir);
        fs.mkdirSync(dir);
        fs.writeFileSync(join(dir, 'pids.max'), '7');
        assert.equal(files.read(join(dir, 'pids.max')), '7\n');
        await rmdirRetry(dir);
        assert.equal(files.read(join(dir, 'pids.max')), null, 'gone: reads as missing');
        assert.equal(files.size, 0);
      } finally {
        files.close();
      }
      await assert.rejects(collectMetrics(h), CgroupNotFoundError);
      assert.equal(openCgroupFileCount(), baseCount, 'a gone cgroup keeps no descriptor');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      releaseCgroupFiles(h);
      await rmdirRetry(dir).catch(() => {});
    }
  }
);
