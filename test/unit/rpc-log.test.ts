// The Task handlers' debug line per call: every call that changes something or fails gets one,
// a successful query that containerd repeats (State, Pids, Stats, Connect) none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerd } from '../../src/gen/proto';
import { createLogger } from '../../src/sys/logger';
import { taskHandlers, type RpcStats } from '../../src/task/rpc';
import type { TaskService } from '../../src/task/service';
import { notFound } from '../../src/task/errors';

const T = containerd.task.v2;

function handlersLoggingTo(lines: string[], stats?: RpcStats) {
  let stateFails = false;
  const svc = {
    state: () => {
      if (stateFails) throw notFound('container c');
      return { id: 'c', pid: 42 };
    },
    connect: () => ({ shim_pid: 1, task_pid: 42 }),
    kill: () => Promise.resolve(),
  } as unknown as TaskService;
  const log = createLogger({ write: (l) => lines.push(l) }, 'debug');
  const h = taskHandlers(svc, 'default', log, stats);
  const ctx = (method: string) => ({
    service: 'containerd.task.v2.Task',
    method,
    metadata: { 'containerd-namespace-ttrpc': ['k8s.io'] },
    signal: new AbortController().signal,
  });
  return {
    call: (method: string, payload: Uint8Array) => h[method](Buffer.from(payload), ctx(method)),
    failState: () => (stateFails = true),
  };
}

test('rpc debug lines: a call that changes something gets one, a successful State or Connect none, a failed State one', async () => {
  const lines: string[] = [];
  const stats: RpcStats = { calls: new Map() };
  const { call, failState } = handlersLoggingTo(lines, stats);
  await call('State', T.StateRequest.encode({ id: 'c' }).finish());
  await call('Connect', T.ConnectRequest.encode({ id: 'c' }).finish());
  assert.deepEqual(lines, [], 'no line for a query that succeeded');
  await call('Kill', T.KillRequest.encode({ id: 'c', signal: 9 }).finish());
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=debug msg="rpc" method=Kill namespace=k8s.io duration_ms=\d+\.\d\d failed=false\n$/);
  failState();
  await assert.rejects(async () => call('State', T.StateRequest.encode({ id: 'c' }).finish()));
  assert.equal(lines.length, 2);
  assert.match(lines[1], /msg="rpc" method=State namespace=k8s.io duration_ms=\S+ failed=true/);
  // Every call is still counted for the metrics endpoint, logged or not.
  assert.equal(stats.calls.get('State')?.count, 2);
  assert.equal(stats.calls.get('State')?.errors, 1);
  assert.equal(stats.calls.get('Connect')?.count, 1);
  assert.equal(stats.calls.get('Kill')?.count, 1);
});
