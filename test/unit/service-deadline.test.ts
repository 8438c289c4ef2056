// containerd's deadline (timeout_nano) bounds every runc run behind a Task call, not only Create:
// a runtime that hangs in pause, resume or update fails the call at the deadline, naming the binary.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Reaper } from '../../src/sys/reaper';
import { TaskService, STATUS } from '../../src/task/service';
import { TaskEvents } from '../../src/task/events';
import { Publisher } from '../../src/shim/publisher';
import { nullLogger } from '../../src/sys/logger';
import { containerd } from '../../src/gen/proto';

Reaper.instance({ subreaper: false });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-deadline-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** create/start answer at once (create writes <dir>/init.pid to --pid-file); pause, resume and update hang. */
function runtimeThatHangs(): string {
  const bin = path.join(dir, 'runc');
  fs.writeFileSync(
    bin,
    `#!/bin/sh
cmd=''; pidfile=''
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log|--log-format|--bundle|--console-socket) shift 2 ;;
    --pid-file) pidfile=$2; shift 2 ;;
    create|start|kill|delete|pause|resume|update) [ -z "$cmd" ] && cmd=$1; shift ;;
    *) shift ;;
  esac
done
case "$cmd" in pause|resume|update) exec sleep 60 ;; esac
if [ -n "$pidfile" ]; then cat "${dir}/init.pid" > "$pidfile"; fi
exit 0
`,
    { mode: 0o755 }
  );
  return bin;
}

test('pause, resume and update honour the request deadline: the hung runtime is named, the call fails, the shim goes on', async () => {
  const service = new TaskService({
    events: new TaskEvents(new Publisher(null)),
    exits: { subscribe: () => () => {} },
    runner: Reaper.instance(),
    log: nullLogger,
    shimPid: process.pid,
    onEmpty: () => {},
  });
  const bundle = fs.mkdtempSync(path.join(dir, 'bundle-'));
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ linux: { namespaces: [{ type: 'pid' }] } }));
  const init = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(init);
  fs.writeFileSync(path.join(dir, 'init.pid'), String(init.pid));
  const binary = runtimeThatHangs();
  const options = {
    type_url: 'containerd.runc.v1.Options',
    value: containerd.runc.v1.Options.encode({ binary_name: binary, root: path.join(dir, 'root') }).finish(),
  };
  const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };
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
  // Without the deadline each of these would wait for the runtime (60 s) or TSSHIM_RUNC_TIMEOUT (120 s).
  const soon = () => ({ deadline: Date.now() + 300 });
  await assert.rejects(service.pause('ns', 'c1', soon()), new RegExp(`pause.*${binary}.*did not answer`));
  assert.equal(service.state('ns', 'c1', '').status, STATUS.RUNNING, 'a failed pause leaves the container running');
  await assert.rejects(service.resume('ns', 'c1', soon()), /did not answer|cannot resume/);
  await assert.rejects(
    service.update('ns', 'c1', Buffer.from('{}'), soon()),
    new RegExp(`update.*${binary}.*did not answer`)
  );
  assert.equal(service.state('ns', 'c1', '').status, STATUS.RUNNING);
});
