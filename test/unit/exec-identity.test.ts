// Process identity: an exec is STOPPED as soon as its exit is known, and Kill never signals a pid
// that may already belong to another process (pidfd held from the moment the pid is known).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Reaper, type Exit } from '../../src/sys/reaper';
import { pidfdOpen, pidfdSendSignal, close as closeFd, SysError } from '../../src/sys/libc';
import { TaskService, STATUS } from '../../src/task/service';
import { TaskEvents } from '../../src/task/events';
import { Publisher } from '../../src/shim/publisher';
import { nullLogger } from '../../src/sys/logger';
import { Code } from '../../src/ttrpc';
import { rpcError } from '../../src/task/rpc';

// Runs of the fake runtime below go through the real reaper (libuv owns them); no subreaper here.
Reaper.instance({ subreaper: false });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-identity-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A runtime that writes the pid the test chose (in <dir>/<command>.pid) to --pid-file. */
function fakeRuntime(): string {
  const bin = path.join(dir, 'runc');
  fs.writeFileSync(
    bin,
    `#!/bin/sh
cmd=''; pidfile=''
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log|--log-format|--bundle|--process|--console-socket) shift 2 ;;
    --pid-file) pidfile=$2; shift 2 ;;
    create|exec|start|kill|delete) [ -z "$cmd" ] && cmd=$1; shift ;;
    *) shift ;;
  esac
done
if [ -n "$pidfile" ]; then cat "${dir}/$cmd.pid" > "$pidfile"; fi
exit 0
`,
    { mode: 0o755 }
  );
  return bin;
}

/** Exits the test hands to the service as the reaper would. */
class FakeReaper {
  private subs: ((e: Exit) => void)[] = [];
  subscribe(fn: (e: Exit) => void) {
    this.subs.push(fn);
    return () => {};
  }
  emit(pid: number, status: number) {
    for (const s of this.subs) s({ pid, status, at: new Date(), atNanos: 0, nanos: 0 });
  }
}

function sleeper(): ChildProcess {
  const c = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(c);
  return c;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function serviceWithExec(execPid: number) {
  const reaper = new FakeReaper();
  const service = new TaskService({
    events: new TaskEvents(new Publisher(null)),
    exits: reaper,
    runner: Reaper.instance(),
    log: nullLogger,
    shimPid: process.pid,
    onEmpty: () => {},
  });
  const bundle = fs.mkdtempSync(path.join(dir, 'bundle-'));
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ linux: { namespaces: [{ type: 'pid' }] } }));
  const init = sleeper();
  fs.writeFileSync(path.join(dir, 'create.pid'), String(init.pid));
  fs.writeFileSync(path.join(dir, 'exec.pid'), String(execPid));
  const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };
  const { containerd } = await import('../../src/gen/proto');
  const options = {
    type_url: 'containerd.runc.v1.Options',
    value: containerd.runc.v1.Options.encode({ binary_name: fakeRuntime(), root: path.join(dir, 'root') }).finish(),
  };
  await service.create({
    namespace: 'ns',
    id: 'c1',
    bundle,
    rootfs: [],
    stdio,
    checkpoint: '',
    parentCheckpoint: '',
    options,
  });
  await service.start('ns', 'c1', '');
  await service.exec('ns', 'c1', 'e1', stdio, { value: Buffer.from(JSON.stringify({ args: ['sh'], cwd: '/' })) });
  await service.start('ns', 'c1', 'e1');
  return { service, reaper };
}

test('an exec is STOPPED the moment its exit is known, with its status, before the exit event goes out', async () => {
  const exec = sleeper();
  const { service, reaper } = await serviceWithExec(exec.pid!);
  assert.equal(service.state('ns', 'c1', 'e1').status, STATUS.RUNNING);
  reaper.emit(exec.pid!, 3);
  // Synchronously: no IO drain or event ordering in between.
  const st = service.state('ns', 'c1', 'e1');
  assert.equal(st.status, STATUS.STOPPED);
  assert.equal(st.exit_status, 3);
  assert.ok(st.exited_at.seconds > 1_600_000_000, 'exited_at set');
});

test('Kill after the exit is known never signals the pid (which the kernel may have given to another process)', async () => {
  // The exec's pid now belongs to an unrelated live process: the exit said the exec is gone.
  const stranger = sleeper();
  const { service, reaper } = await serviceWithExec(stranger.pid!);
  reaper.emit(stranger.pid!, 0);
  await assert.rejects(service.kill('ns', 'c1', 'e1', 9, false), (e: unknown) => rpcError(e).code === Code.NOT_FOUND);
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(alive(stranger.pid!), 'the process that got the pid was not signalled');
});

test('Kill of a running exec goes through its pidfd', async () => {
  const exec = sleeper();
  const { service } = await serviceWithExec(exec.pid!);
  const gone = new Promise((r) => exec.once('exit', (_c, sig) => r(sig)));
  await service.kill('ns', 'c1', 'e1', 15, false);
  assert.equal(await gone, 'SIGTERM');
});

test('pidfd_send_signal refuses a process that exited and was reaped (ESRCH), whoever has its pid now', async () => {
  const c = sleeper();
  const fd = pidfdOpen(c.pid!);
  try {
    pidfdSendSignal(fd, 0);
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited; // reaped by libuv
    assert.throws(
      () => pidfdSendSignal(fd, 9),
      (e: unknown) => e instanceof SysError && e.code === 'ESRCH'
    );
  } finally {
    closeFd(fd);
  }
});
