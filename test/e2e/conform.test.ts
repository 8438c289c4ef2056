// What containerd's own clients and tools do with a shim, through a real containerd 1.6 (issue 13):
// ResizePty on a task without a terminal, a ResizePty that comes before the exec's Start, the legacy
// containerd.linux.runc.CreateOptions task options, the runc shim's grouping annotation, the log of a
// grouped shim after its first container is gone, and the daemon's NUL-separated /proc cmdline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, RUNC_RUNTIME, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS, DEFAULT_PATH } from '../support/rootfs';
import { callTasks, getTask } from '../support/containerd-api';
import { removeQuietly, runDetached as runContainer } from '../support/containers';
import { until } from '../support/wait';
import { containerd as gen } from '../../src/gen/proto';
import { splitCmdline } from '../../src/shim/proc-title';
import { requestedVersion } from '../support/containerd-release';

let c: Containerd;
let rootfs: string;

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
});
after(() => c?.stop());

const runArgs = (runtime: string, id: string, cmd: string[], extra: string[] = []) => [
  '--runtime',
  runtime,
  ...PATH_ENV_ARGS,
  ...extra,
  '--rootfs',
  rootfs,
  id,
  ...cmd,
];

const runDetached = (runtime: string, id: string, cmd: string[], extra: string[] = []) =>
  runContainer(c, id, cmd, { runtime, rootfs, extra: [...PATH_ENV_ARGS, ...extra] });
const remove = (id: string) => removeQuietly(c, id);

/** A fifo in the test dir with a reader that collects what arrives. */
function outputFifo(name: string): { path: string; text: () => string; close: () => void } {
  const p = path.join(c.dir, `${name}-${uniqueId('f')}`);
  execFileSync('mkfifo', [p]);
  const sock = new net.Socket({
    fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
    readable: true,
    writable: false,
  });
  let text = '';
  sock.on('data', (d) => (text += d));
  sock.on('error', () => undefined);
  return { path: p, text: () => text, close: () => sock.destroy() };
}

// ---------------------------------------------------------------------------------------------

test('ResizePty on a task without a terminal succeeds and does nothing, as with runc.v2', async () => {
  for (const runtime of [RUNC_RUNTIME, TSSHIM_RUNTIME]) {
    const id = uniqueId('notty');
    await runDetached(runtime, id, ['sleep', '1000']);
    try {
      await callTasks(c, 'ResizePty', { container_id: id, width: 100, height: 40 });
      assert.equal((await getTask(c, id)).status, 'RUNNING', runtime);
    } finally {
      await remove(id);
    }
  }
});

test('a ResizePty between Exec and Start is not lost: the exec sees that size (tsshim)', async () => {
  const id = uniqueId('earlysize');
  await runDetached(TSSHIM_RUNTIME, id, ['sleep', '1000']);
  const stdinPath = path.join(c.dir, `in-${id}`);
  execFileSync('mkfifo', [stdinPath]);
  // O_RDWR: never blocks, and keeps the fifo open for the shim's reader.
  const stdinFd = fs.openSync(stdinPath, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const out = outputFifo('out');
  try {
    // The size must be there for the exec's very first instruction.
    const spec = { args: ['stty', 'size'], env: [DEFAULT_PATH], cwd: '/', terminal: true, user: { uid: 0, gid: 0 } };
    await callTasks(c, 'Exec', {
      container_id: id,
      exec_id: 'tty1',
      stdin: stdinPath,
      stdout: out.path,
      terminal: true,
      spec: {
        type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
        value: Buffer.from(JSON.stringify(spec)),
      },
    });
    // Acknowledged before the process exists: the shim must keep it.
    await callTasks(c, 'ResizePty', { container_id: id, exec_id: 'tty1', width: 111, height: 33 });
    await callTasks(c, 'Start', { container_id: id, exec_id: 'tty1' });
    await until(() => /\d+ \d+|stty:/.test(out.text()), 'stty output', 30_000);
    assert.match(out.text(), /33 111\r?\n/);
    await until(async () => (await getTask(c, id, 'tty1')).status === 'STOPPED', 'exec stopped', 30_000);
    await callTasks(c, 'DeleteProcess', { container_id: id, exec_id: 'tty1' });
  } finally {
    fs.closeSync(stdinFd);
    out.close();
    await remove(id);
  }
});

/** Makes a v1 cgroup in every hierarchy that has controllers; returns the cgroup path and a cleanup. */
function makeV1Cgroup(name: string): { cgroup: string; remove: () => Promise<void> } {
  const made: string[] = [];
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    if (!/^(memory|pids|cpu,cpuacct|blkio)$/.test(h)) continue;
    const dir = path.join('/sys/fs/cgroup', h, name);
    fs.mkdirSync(dir);
    made.push(dir);
  }
  assert.ok(made.length > 0, 'cgroup v1 hierarchies (memory, pids, ...) expected on this host');
  return {
    cgroup: `/${name}`,
    // The shim leaves its cgroup when it exits, shortly after the task is deleted; a warm spare it
    // booted on its way out may still be in there: moved to the parent, so the cgroup can go.
    remove: async () => {
      const procs = (d: string) => fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
      await until(() => made.every((d) => procs(d).length === 0), `${name} empty`, 10_000).catch(() => {});
      for (const d of made) {
        for (const pid of procs(d)) {
          try {
            fs.writeFileSync(path.join(path.dirname(d), 'cgroup.procs'), pid);
          } catch {
            /* gone */
          }
        }
        try {
          fs.rmdirSync(d);
        } catch {
          /* still in use */
        }
      }
    },
  };
}

function cgroupOf(pid: number, controller: string): string {
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const [, ctrls, p] = line.split(':');
    if (ctrls && ctrls.split(',').includes(controller)) return p;
  }
  return '';
}

// containerd 2.x dropped the runctypes package: its Tasks.Create answers "type with url
// containerd.linux.runc.CreateOptions: not found" before any shim is involved.
const LEGACY_OPTIONS_SKIP = requestedVersion()
  ? 'containerd 2.x no longer knows the legacy runctypes options type'
  : false;

test(
  'legacy containerd.linux.runc.CreateOptions task options: shim_cgroup moves the shim, io_uid/io_gid own the stdio pipes',
  { skip: LEGACY_OPTIONS_SKIP },
  async () => {
    const id = uniqueId('legacy');
    const cg = makeV1Cgroup(`tsshim-e2e-${id}`);
    const out = outputFifo('out');
    const cr = await c.ctr(['container', 'create', ...runArgs(TSSHIM_RUNTIME, id, ['sleep', '1000'])]);
    assert.equal(cr.code, 0, cr.stderr);
    try {
      const value = gen.linux.runc.CreateOptions.encode({
        shim_cgroup: cg.cgroup,
        io_uid: 1234,
        io_gid: 5678,
      }).finish();
      // As containerd 1.6's Go client sends it (WithShimCgroup, WithUIDOwner) to a runtime not named io.containerd.runc*.
      const created = await callTasks<{ pid: number }>(c, 'Create', {
        container_id: id,
        stdout: out.path,
        options: { type_url: 'containerd.linux.runc.CreateOptions', value: Buffer.from(value) },
      });
      const shimPid = Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
      assert.ok(shimPid > 0);
      assert.equal(cgroupOf(shimPid, 'memory'), cg.cgroup, `shim ${shimPid} in the requested cgroup`);
      const pipe = fs.statSync(`/proc/${created.pid}/fd/1`);
      assert.ok(pipe.isFIFO(), 'the container writes to a pipe');
      // The shim fchowns the pipe to io_uid:io_gid before runc runs; runc's init then gives the uid
      // (only) to the container's user (fixStdioPermissions), here root. The gid shows the shim's chown.
      assert.deepEqual([pipe.uid, pipe.gid], [0, 5678], 'stdout pipe: container user, io_gid');
      assert.ok(!/unknown runtime options type/.test(c.logTail(20_000)), 'options type known');
    } finally {
      out.close();
      await remove(id);
      await cg.remove();
    }
  }
);

test('io.containerd.runc.v2.group: ten containers of one group share one tsshim daemon', async () => {
  const group = uniqueId('rg');
  const ids = Array.from({ length: 10 }, (_, i) => uniqueId(`rg${i}`));
  const before = new Set(c.shimPids());
  try {
    for (const id of ids)
      await runDetached(
        TSSHIM_RUNTIME,
        id,
        ['sleep', '1000'],
        ['--annotation', `io.containerd.runc.v2.group=${group}`]
      );
    const addresses = new Set(ids.map((id) => fs.readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8').trim()));
    assert.equal(addresses.size, 1, [...addresses].join(' '));
    const daemons = c.shimPids().filter((p) => !before.has(p));
    assert.equal(daemons.length, 1, `new tsshim daemons: ${daemons.join(' ')}`);
  } finally {
    for (const id of ids) await remove(id);
  }
});

test('a grouped shim keeps logging into containerd once its first container is deleted', async () => {
  const group = uniqueId('lg');
  const first = uniqueId('lg-first');
  const second = uniqueId('lg-second');
  const annotation = ['--annotation', `io.containerd.tsshim.v2.group=${group}`];
  await runDetached(TSSHIM_RUNTIME, first, ['sleep', '1000'], annotation);
  await runDetached(TSSHIM_RUNTIME, second, ['sleep', '1000'], annotation);
  try {
    assert.equal(
      fs.readFileSync(path.join(c.bundleDir(first), 'address'), 'utf8'),
      fs.readFileSync(path.join(c.bundleDir(second), 'address'), 'utf8')
    );
    await remove(first);
    // The shim started in first's bundle; its exit line for `second` must still reach containerd.
    await c.ctr(['task', 'kill', '-s', 'KILL', second]);
    const line = new RegExp(`msg="process exited".*id=${second}`);
    await until(
      () => line.test(c.logTail(200_000)),
      `the shim's "process exited" line for ${second} in containerd's log`,
      30_000
    );
  } finally {
    await remove(second);
  }
});

test("the daemon's /proc cmdline is NUL-separated like the Go shim's, and bin/'s is_shim still knows it", async () => {
  const id = uniqueId('cmdline');
  await runDetached(TSSHIM_RUNTIME, id, ['sleep', '1000']);
  try {
    const shimPid = Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
    const argv = splitCmdline(fs.readFileSync(`/proc/${shimPid}/cmdline`));
    const want = ['containerd-shim-tsshim-v2', '-namespace', c.namespace, '-id', id, '-address', c.address];
    assert.deepEqual(argv.slice(0, want.length), want);
    assert.ok(
      argv.length === want.length || (argv.length === want.length + 1 && argv[want.length] === '-debug'),
      JSON.stringify(argv)
    );
    // The sh fast path checks a daemon's pid with is_shim (bin/containerd-shim-tsshim-v2).
    const text = fs.readFileSync(path.join(repoRoot(), 'bin', 'containerd-shim-tsshim-v2'), 'utf8');
    const isShim = /^is_shim\(\) \{[\s\S]*?^\}/m.exec(text)![0];
    assert.equal(spawnSync('sh', ['-c', `${isShim}\nis_shim "$1"`, 'sh', String(shimPid)]).status, 0);
  } finally {
    await remove(id);
  }
});
