import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, fstatSync, promises as fsp, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from '../../src/sys/libc';
import { cgroupForPid } from '../../src/task/cgroups/discovery';
import { EventfdReader, type EventfdMode } from '../../src/task/cgroups/eventfd-reader';
import { OomWatcher } from '../../src/task/cgroups/oom';
import { V1OomRegistration } from '../../src/task/cgroups/oom-v1';
import { rmdirRetry } from '../support/cgroup';
import { sleep, until } from '../support/wait';

const V2_FIXTURE = resolve(__dirname, '../../../test/fixtures/cgroup-v2/default/ctr1');

function signal(fd: number, n: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  writeSync(fd, b);
}

for (const mode of ['stream', 'poll'] as EventfdMode[]) {
  test(`EventfdReader (${mode}): each write is one signal with its counter; close() closes the fd`, async () => {
    const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const got: bigint[] = [];
    const r = new EventfdReader(fd, (n) => got.push(n), mode);
    assert.equal(r.mode, mode);
    signal(fd, 1n);
    await until(() => got.length === 1, 'first signal', { timeoutMs: 2000, everyMs: 10 });
    signal(fd, 2n);
    signal(fd, 3n); // not read in between: the kernel sums them
    await until(() => got.length === 2, 'second signal', { timeoutMs: 2000, everyMs: 10 });
    assert.deepEqual(got, [1n, 5n]);
    r.close();
    await sleep(20);
    assert.throws(() => fstatSync(fd), /EBADF/);
  });
}

test('EventfdReader (stream) waits without occupying the libuv thread pool', async () => {
  // Twice as many idle readers as pool threads: a blocking design would starve fs calls.
  const readers = Array.from(
    { length: 8 },
    () => new EventfdReader(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), () => {}, 'stream')
  );
  try {
    const started = Date.now();
    await Promise.all(Array.from({ length: 16 }, () => fsp.readFile('/proc/self/stat')));
    assert.ok(Date.now() - started < 1000, 'fs calls completed while readers wait');
  } finally {
    readers.forEach((r) => r.close());
  }
});

test('EventfdReader drain() delivers a pending signal synchronously', () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const got: bigint[] = [];
  const r = new EventfdReader(fd, (n) => got.push(n), 'stream');
  signal(fd, 7n);
  r.drain();
  assert.deepEqual(got, [7n]);
  r.close();
});

test('v2: oom_kill increases in memory.events fire once each; populated 0 stops the watch', async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'tsshim-oom2-'));
  cpSync(V2_FIXTURE, dir, { recursive: true });
  const events = (oomKill: number, high = 0) =>
    `low 0\nhigh ${high}\nmax 12\noom 3\noom_kill ${oomKill}\noom_group_kill 0\n`;
  const fired: string[] = [];
  const w = new OomWatcher((id) => fired.push(id));
  try {
    await w.add('c2', { version: 2, dir });
    await fsp.appendFile(join(dir, 'memory.events'), ''); // touch without change: oom_kill 2 > 0 counts (containerd starts at 0)
    await fsp.writeFile(join(dir, 'memory.events'), events(3));
    await until(() => fired.length >= 1, 'first OOM', { timeoutMs: 3000, everyMs: 10 });
    await sleep(100);
    const afterFirst = fired.length;
    assert.ok(afterFirst >= 1 && afterFirst <= 2);
    await fsp.writeFile(join(dir, 'memory.events'), events(3, 5)); // high changed, oom_kill did not
    await sleep(200);
    assert.equal(fired.length, afterFirst, 'no event without an oom_kill increase');
    await fsp.writeFile(join(dir, 'memory.events'), events(4, 5));
    await until(() => fired.length === afterFirst + 1, 'second OOM', { timeoutMs: 3000, everyMs: 10 });
    assert.ok(fired.every((id) => id === 'c2'));
    await fsp.writeFile(join(dir, 'cgroup.events'), 'populated 0\nfrozen 0\n');
    await until(() => !w.has('c2'), 'watch to stop', { timeoutMs: 3000, everyMs: 10 });
    await fsp.writeFile(join(dir, 'memory.events'), events(9));
    await sleep(200);
    assert.equal(fired.length, afterFirst + 1, 'nothing after the watch stopped');
  } finally {
    w.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

/** A copy of the v2 fixture whose memory.events shows no OOM kill, and a watcher recording ids. */
async function v2Copy() {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'tsshim-oom2-'));
  cpSync(V2_FIXTURE, dir, { recursive: true });
  await fsp.writeFile(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n');
  const fired: string[] = [];
  const w = new OomWatcher((id) => fired.push(id));
  const cleanup = async () => {
    w.close();
    await fsp.rm(dir, { recursive: true, force: true });
  };
  return { dir, fired, w, cleanup };
}

test('v2: exactly one event per increase, and flush() reads a change inotify has not delivered yet', async () => {
  const { dir, fired, w, cleanup } = await v2Copy();
  try {
    await w.add('c3', { version: 2, dir });
    await fsp.writeFile(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n');
    await w.flush('c3');
    assert.deepEqual(fired, ['c3']);
    await sleep(200); // the queued inotify event re-reads: same counter, no second event
    assert.deepEqual(fired, ['c3']);
    await fsp.rm(join(dir, 'memory.events'));
    await until(() => !w.has('c3'), 'watch to stop when memory.events vanishes', { timeoutMs: 3000, everyMs: 10 });
    assert.deepEqual(fired, ['c3']);
  } finally {
    await cleanup();
  }
});

// settled() lets the service publish an exit at once when no OOM can be pending (service.ts).
test('v1: settled() reads a pending notification at once and is false until flush() reported it', async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'tsshim-oom1-'));
  const efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const fired: number[] = [];
  // A registration on our own eventfd: the test plays the kernel's part.
  const reg = V1OomRegistration.adopt(
    { efd, unchecked: 0 },
    { memory: dir },
    () => fired.push(1),
    () => {},
    'poll'
  );
  try {
    assert.equal(reg.settled(), true);
    signal(efd, 1n);
    assert.equal(reg.settled(), false, 'the counter in the kernel is read, its check is pending');
    await reg.flush();
    assert.deepEqual(fired, [1]);
    assert.equal(reg.settled(), true);
  } finally {
    reg.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('v2: settled() is false while memory.events shows an OOM kill not reported yet', async () => {
  const { dir, fired, w, cleanup } = await v2Copy();
  try {
    await w.add('c4', { version: 2, dir });
    assert.equal(w.settled('c4'), true);
    // Written and asked in one turn: inotify's event cannot have been handled in between.
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n');
    assert.equal(w.settled('c4'), false);
    await w.flush('c4');
    assert.deepEqual(fired, ['c4']);
    assert.equal(w.settled('c4'), true);
    assert.equal(w.settled('nothing-watches-this'), true);
  } finally {
    await cleanup();
  }
});

test('OomWatcher.add rejects a v1 cgroup without memory controller', async () => {
  const w = new OomWatcher(() => {});
  await assert.rejects(w.add('x', { version: 1, paths: { pids: '/sys/fs/cgroup/pids' } }), /no memory controller/);
  assert.equal(w.has('x'), false);
  w.close();
});

const canLive = process.getuid?.() === 0 && existsSync('/sys/fs/cgroup/memory/cgroup.event_control');

/**
 * A v1 memory cgroup limited to 16 MiB and a child that outgrows it once told to (a line on its
 * stdin), after the caller moved it into the cgroup: dd touches its whole 64 MiB buffer.
 */
async function oomCandidate() {
  const dir = join('/sys/fs/cgroup/memory', `tsshim-test-${randomBytes(4).toString('hex')}`);
  await fsp.mkdir(dir);
  await fsp.writeFile(join(dir, 'memory.limit_in_bytes'), String(16 * 1024 * 1024));
  if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) {
    await fsp.writeFile(join(dir, 'memory.memsw.limit_in_bytes'), String(16 * 1024 * 1024));
  }
  const child = spawn('sh', ['-c', 'read go; exec dd if=/dev/zero of=/dev/null bs=64M count=4'], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
  return { dir, child, exited };
}

for (const mode of ['stream', 'poll'] as EventfdMode[]) {
  test(
    `live v1 (${mode}): a process exceeding memory.limit_in_bytes fires onOom; rmdir unregisters silently`,
    { skip: !canLive && 'needs root and the v1 memory controller' },
    async () => {
      const { dir, child, exited } = await oomCandidate();
      const fired: string[] = [];
      const w = new OomWatcher((id) => fired.push(id), { eventfdMode: mode });
      try {
        await fsp.writeFile(join(dir, 'cgroup.procs'), String(child.pid));
        const h = cgroupForPid(child.pid!);
        assert.ok(h && h.version === 1 && h.paths.memory === dir);
        await w.add('ctr-oom', { version: 1, paths: { memory: dir } });
        child.stdin!.write('go\n');
        assert.equal(await exited, 'SIGKILL', 'the OOM killer ended the child');
        await until(() => fired.length >= 1, 'OOM event', { timeoutMs: 5000, everyMs: 10 });
        assert.deepEqual([...new Set(fired)], ['ctr-oom']);
        const oomControl = await fsp.readFile(join(dir, 'memory.oom_control'), 'utf8');
        assert.match(oomControl, /oom_kill [1-9]/);
        const count = fired.length;

        await rmdirRetry(dir); // the kernel signals the eventfd on removal: not an OOM
        await until(() => !w.has('ctr-oom'), 'unregistration after rmdir', { timeoutMs: 5000, everyMs: 10 });
        assert.equal(fired.length, count, 'removal produced no OOM event');
      } finally {
        w.close();
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        await rmdirRetry(dir).catch(() => {});
      }
    }
  );
}

test(
  'live v1: remove() stops notifications before the cgroup goes away',
  { skip: !canLive && 'needs root and the v1 memory controller' },
  async () => {
    const dir = join('/sys/fs/cgroup/memory', `tsshim-test-${randomBytes(4).toString('hex')}`);
    await fsp.mkdir(dir);
    const fired: string[] = [];
    const w = new OomWatcher((id) => fired.push(id));
    try {
      await w.add('r', { version: 1, paths: { memory: dir } });
      assert.ok(w.has('r'));
      w.remove('r');
      assert.equal(w.has('r'), false);
      await rmdirRetry(dir);
      await sleep(200);
      assert.deepEqual(fired, []);
    } finally {
      w.close();
      await rmdirRetry(dir).catch(() => {});
    }
  }
);

test('v2: remove() right after add() leaves nothing watching', async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'tsshim-oom2-'));
  cpSync(V2_FIXTURE, dir, { recursive: true });
  const fired: string[] = [];
  const w = new OomWatcher((id) => fired.push(id));
  try {
    const adding = w.add('late', { version: 2, dir });
    w.remove('late');
    await adding;
    assert.equal(w.has('late'), false);
    await fsp.writeFile(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 0\noom 9\noom_kill 9\n');
    await sleep(200);
    assert.deepEqual(fired, []);
  } finally {
    w.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test(
  'live v1: remove() while add() is still registering drops the registration',
  { skip: !canLive && 'needs root and the v1 memory controller' },
  async () => {
    const dir = join('/sys/fs/cgroup/memory', `tsshim-test-${randomBytes(4).toString('hex')}`);
    await fsp.mkdir(dir);
    const w = new OomWatcher(() => {});
    try {
      const adding = w.add('pending', { version: 1, paths: { memory: dir } });
      w.remove('pending'); // add() is awaiting the cgroup.event_control write
      await adding;
      assert.equal(w.has('pending'), false);
    } finally {
      w.close();
      await rmdirRetry(dir).catch(() => {});
    }
  }
);

// In-place upgrade: a watch stops in one program and goes on in the next without a gap or a repeat.

for (const mode of ['stream', 'poll'] as EventfdMode[]) {
  test(`EventfdReader (${mode}) detach(): delivers what is pending, keeps the fd open, reads no more`, async () => {
    const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const got: bigint[] = [];
    const r = new EventfdReader(fd, (n) => got.push(n), mode);
    signal(fd, 2n);
    assert.equal(r.detach(), fd);
    assert.deepEqual(got, [2n], 'the pending counter is delivered by detach');
    signal(fd, 5n);
    await sleep(300); // longer than the poll interval
    assert.deepEqual(got, [2n], 'nothing read after detach');
    const next: bigint[] = [];
    const r2 = new EventfdReader(fd, (n) => next.push(n), mode);
    await until(() => next.length === 1, 'the next reader gets the counter', { timeoutMs: 2000, everyMs: 10 });
    assert.deepEqual(next, [5n]);
    r2.close();
  });
}

test('v2 handover: an OOM kill while no program watched is reported once; earlier ones never again', async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), 'tsshim-oom2-'));
  cpSync(V2_FIXTURE, dir, { recursive: true });
  const events = (oomKill: number, high = 0) => `low 0\nhigh ${high}\nmax 0\noom 0\noom_kill ${oomKill}\n`;
  await fsp.writeFile(join(dir, 'memory.events'), events(0));
  const old: string[] = [];
  const w1 = new OomWatcher((id) => old.push(id));
  const w2fired: string[] = [];
  const w2 = new OomWatcher((id) => w2fired.push(id));
  const w3fired: string[] = [];
  const w3 = new OomWatcher((id) => w3fired.push(id));
  try {
    await w1.add('c', { version: 2, dir });
    await fsp.writeFile(join(dir, 'memory.events'), events(2));
    await w1.flush('c');
    assert.deepEqual(old, ['c']);
    const h = w1.handover('c');
    assert.deepEqual(h, { oomKills: '2' });
    assert.equal(w1.has('c'), false);
    await fsp.writeFile(join(dir, 'memory.events'), events(3)); // nobody watches
    await sleep(100);
    assert.deepEqual(old, ['c'], 'the old watch reports nothing after the handover');

    await w2.add('c', { version: 2, dir }, h!);
    await until(() => w2fired.length === 1, 'the OOM kill of the gap', { timeoutMs: 3000, everyMs: 10 });
    await fsp.writeFile(join(dir, 'memory.events'), events(3, 1)); // no new kill
    await w2.flush('c');
    await sleep(100);
    assert.deepEqual(w2fired, ['c'], 'reported once');

    // Another upgrade with nothing in between: the count handed over is no OOM of its own.
    const h2 = w2.handover('c');
    assert.deepEqual(h2, { oomKills: '3' });
    await w3.add('c', { version: 2, dir }, h2!);
    await w3.flush('c');
    await sleep(100);
    assert.deepEqual(w3fired, [], 'no OOM reported twice');
  } finally {
    for (const w of [w1, w2, w3]) w.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('OomWatcher.handover of an id nothing watches is null', () => {
  const w = new OomWatcher(() => {});
  assert.equal(w.handover('nobody'), null);
  w.close();
});

for (const mode of ['stream', 'poll'] as EventfdMode[]) {
  test(
    `live v1 (${mode}) handover: the registered eventfd crosses over; an OOM while handed over is reported once`,
    { skip: !canLive && 'needs root and the v1 memory controller' },
    async () => {
      const { dir, child, exited } = await oomCandidate();
      const before: string[] = [];
      const after: string[] = [];
      const w1 = new OomWatcher((id) => before.push(id), { eventfdMode: mode });
      const w2 = new OomWatcher((id) => after.push(id), { eventfdMode: mode });
      try {
        await fsp.writeFile(join(dir, 'cgroup.procs'), String(child.pid));
        await w1.add('v1', { version: 1, paths: { memory: dir } });
        const h = w1.handover('v1') as { efd: number; unchecked: number };
        assert.equal(typeof h.efd, 'number');
        assert.equal(h.unchecked, 0);
        assert.doesNotThrow(() => fstatSync(h.efd), 'the eventfd stays open');
        child.stdin!.write('go\n'); // the OOM happens while nobody reads the eventfd
        assert.equal(await exited, 'SIGKILL');
        await sleep(200);
        assert.deepEqual(before, [], 'the old watch reports nothing after the handover');
        await w2.add('v1', { version: 1, paths: { memory: dir } }, h);
        await until(() => after.length >= 1, 'the OOM of the gap', { timeoutMs: 5000, everyMs: 10 });
        await w2.flush('v1');
        assert.deepEqual([...new Set(after)], ['v1']);
        await rmdirRetry(dir);
        await until(() => !w2.has('v1'), 'unregistration after rmdir', { timeoutMs: 5000, everyMs: 10 });
      } finally {
        w1.close();
        w2.close();
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        await rmdirRetry(dir).catch(() => {});
      }
    }
  );
}
