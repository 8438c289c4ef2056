// The Task service's side of "no shim outlives containerd's interest": a Shutdown that arrives while
// a Create still runs is remembered, and a Create that fails and leaves nothing reports the shim idle.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Reaper } from '../../src/sys/reaper';
import { TaskService } from '../../src/task/service';
import { TaskEvents } from '../../src/task/events';
import { Publisher } from '../../src/shim/publisher';
import { nullLogger } from '../../src/sys/logger';
import { Code } from '../../src/ttrpc';
import { rpcError } from '../../src/task/rpc';
import { containerd } from '../../src/gen/proto';

Reaper.instance({ subreaper: false });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-svc-shutdown-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A runtime whose create waits for <dir>/go to appear, then fails. */
function slowFailingRuntime(): string {
  const bin = path.join(dir, 'runc');
  fs.writeFileSync(
    bin,
    `#!/bin/sh\nfor a in "$@"; do [ "$a" = create ] && { while [ ! -e ${dir}/go ]; do sleep 0.05; done; echo "refused" >&2; exit 1; }; done\nexit 0\n`,
    { mode: 0o755 }
  );
  return bin;
}

test('Shutdown during a Create is remembered: when that Create fails, the empty shim is reported idle', async () => {
  const calls: string[] = [];
  const service = new TaskService({
    events: new TaskEvents(new Publisher(null)),
    exits: { subscribe: () => () => {} },
    runner: Reaper.instance(),
    log: nullLogger,
    shimPid: process.pid,
    onEmpty: () => calls.push('empty'),
    onIdle: (reason) => calls.push(`idle: ${reason}`),
  });
  const bundle = fs.mkdtempSync(path.join(dir, 'bundle-'));
  fs.writeFileSync(path.join(bundle, 'config.json'), '{}');
  const options = {
    type_url: 'containerd.runc.v1.Options',
    value: containerd.runc.v1.Options.encode({
      binary_name: slowFailingRuntime(),
      root: path.join(dir, 'root'),
    }).finish(),
  };
  const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };
  const created = service.create({
    namespace: 'ns',
    id: 'c1',
    bundle,
    rootfs: [],
    stdio,
    checkpoint: '',
    parentCheckpoint: '',
    options,
  });
  await new Promise((r) => setTimeout(r, 100));
  // containerd gave up: its clean-up Deletes (the container is not created yet) and asks for Shutdown.
  assert.throws(
    () => service.state('ns', 'c1', ''),
    (e: unknown) => rpcError(e).code === Code.NOT_FOUND
  );
  service.shutdown();
  assert.deepEqual(calls, [], 'not while the Create runs');
  assert.equal(service.shutdownRequested, true);
  fs.writeFileSync(path.join(dir, 'go'), '');
  await assert.rejects(created, /OCI runtime create failed/);
  assert.deepEqual(calls, ['idle: create failed']);
  assert.equal(service.size, 0);
});
