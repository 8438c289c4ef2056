// A fake daemon for the tsshim.v1.Shim service, metrics endpoint and CLI tests: containers in every
// state, an outbox, RPC stats, and cgroup v1 Metrics whose CPU time grows with every Stats call.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { io } from '../../src/gen/proto';
import { Server } from '../../src/ttrpc';
import { registerShimService, type DaemonView } from '../../src/diag/introspection';
import { LATENCY_BUCKETS_MS } from '../../src/task/rpc';
import type { Container } from '../../src/task/container';

export const MiB = 1024 * 1024;
export const CPU_PER_SAMPLE_NS = 5_000_000;

export interface FakeProcessSpec {
  pid: number;
  state: string;
  exit?: { status: number; at: Date } | null;
  execId?: string;
}

export interface FakeContainerSpec {
  namespace: string;
  id: string;
  pid: number;
  state: string;
  pausing?: boolean;
  exit?: { status: number; at: Date } | null;
  execs?: FakeProcessSpec[];
  createdAt?: Date;
  hasCgroup?: boolean;
}

function fakeProcess(containerId: string, p: FakeProcessSpec) {
  const exit = p.exit ? { status: p.exit.status, at: p.exit.at, nanos: 0 } : null;
  return {
    containerId,
    execId: p.execId ?? '',
    pid: p.pid,
    state: p.state,
    exit,
    pausing: false,
    io: exit ? null : {},
    stdio: { stdin: '', stdout: `/run/fifo/${containerId}-${p.execId ?? 'init'}-stdout`, stderr: '', terminal: false },
    get id() {
      return this.execId || this.containerId;
    },
  };
}

export function fakeContainer(c: FakeContainerSpec): Container {
  const init = { ...fakeProcess(c.id, { pid: c.pid, state: c.state, exit: c.exit }), pausing: !!c.pausing };
  const execs = new Map((c.execs ?? []).map((e) => [e.execId!, fakeProcess(c.id, e)]));
  return {
    id: c.id,
    namespace: c.namespace,
    bundle: `/run/bundles/${c.namespace}/${c.id}`,
    createdAt: c.createdAt ?? new Date(Date.now() - 65_000),
    init,
    execs,
    hasCgroup: c.hasCgroup ?? true,
  } as unknown as Container;
}

/** cgroup v1 Metrics: 13 MiB used of which 1 MiB inactive file cache, limit 512 MiB, 3 pids. */
export function v1Metrics(cpuNs: number): Uint8Array {
  return io.containerd.cgroups.v1.Metrics.encode({
    pids: { current: 3, limit: 100 },
    cpu: { usage: { total: cpuNs, user: cpuNs, kernel: 0 } },
    memory: { total_inactive_file: 1 * MiB, usage: { usage: 13 * MiB, limit: 512 * MiB, max: 14 * MiB } },
  }).finish();
}

export type FakeDaemon = DaemonView & {
  containers: Container[];
  statsCalls: number;
  log: { info(): void; warn(): void };
};

export function fakeDaemon(containers: Container[] = defaultContainers()): FakeDaemon {
  const now = Date.now();
  let cpu = 0;
  const d: FakeDaemon = {
    containers,
    statsCalls: 0,
    service: {
      list: () => d.containers,
      async stats(ns: string, id: string) {
        d.statsCalls++;
        const c = d.containers.find((x) => x.namespace === ns && x.id === id) as unknown as
          { hasCgroup: boolean } | undefined;
        if (!c || !c.hasCgroup) throw new Error('cgroup does not exist');
        cpu += CPU_PER_SAMPLE_NS;
        return { typeUrl: 'io.containerd.cgroups.v1.Metrics', value: v1Metrics(cpu) };
      },
      counters: { reaped: 7, exitsPublished: 2 },
    },
    publisher: {
      pending: () => [
        { seq: 41, namespace: 'default', topic: '/tasks/exit', at: now - 3000 },
        { seq: 42, namespace: 'default', topic: '/tasks/delete', at: now - 1000 },
      ],
      stats: { sent: 40, pending: 2, retries: 5, discarded: 1 },
    },
    rpcStats: {
      calls: new Map([
        // Two Create calls of 3 ms and 30 ms; one failed State call of 0.5 ms (cumulative buckets).
        [
          'Create',
          { count: 2, errors: 0, totalMs: 33, buckets: LATENCY_BUCKETS_MS.map((b) => (b >= 30 ? 2 : b >= 3 ? 1 : 0)) },
        ],
        ['State', { count: 1, errors: 1, totalMs: 0.5, buckets: LATENCY_BUCKETS_MS.map(() => 1) }],
      ]),
    },
    startedAt: new Date(now - 120_000),
    socket: '/run/containerd/s/0123abcd',
    namespace: 'default',
    group: 'web',
    log: { info() {}, warn() {} },
  };
  return d;
}

/** web: running with one exec (init pid = this test process, so /proc has real numbers);
 *  db: paused-while-pausing in another namespace; old: stopped with exit 137, no cgroup. */
export function defaultContainers(): Container[] {
  return [
    fakeContainer({
      namespace: 'default',
      id: 'web',
      pid: process.pid,
      state: 'running',
      execs: [{ execId: 'sh', pid: process.pid, state: 'running' }],
    }),
    fakeContainer({ namespace: 'k8s.io', id: 'db', pid: process.pid, state: 'running', pausing: true }),
    fakeContainer({
      namespace: 'default',
      id: 'old',
      pid: 4_000_000,
      state: 'stopped',
      exit: { status: 137, at: new Date() },
      hasCgroup: false,
    }),
  ];
}

export function tempDir(prefix = 'tsshim-op-'): { dir: string; path: (n: string) => string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, path: (n) => path.join(dir, n), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A ttrpc server with only the Shim service, listening on `socket`. */
export async function serveShim(socket: string, daemon: DaemonView): Promise<Server> {
  const server = new Server();
  registerShimService(server, daemon);
  await server.listen(socket);
  return server;
}

/**
 * Sockets discovery must skip: `foreign` serves a Task service but not tsshim's (a Go shim answers
 * Unimplemented), `dead` is a socket file nobody listens on. Returns the foreign server to close.
 */
export async function serveForeignAndDeadSockets(foreign: string, dead: string, scratch: string): Promise<Server> {
  const other = new Server();
  other.register('containerd.task.v2.Task', { Connect: () => new Uint8Array() });
  await other.listen(foreign);
  const gone = path.join(scratch, 'gone.sock');
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(gone, r));
  fs.linkSync(gone, dead);
  await new Promise<void>((r) => srv.close(() => r()));
  return other;
}
