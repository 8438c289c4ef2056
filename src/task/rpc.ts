// Thin RPC layer: decode the request, call the service, encode the reply. Registered under both
// containerd.task.v2.Task and containerd.task.v3.Task (byte-identical messages).
import { containerd } from '../gen/proto';
import { Code, TtrpcError } from '../ttrpc/status';
import type { CallContext, UnaryHandler } from '../ttrpc';
import type { Logger } from '../sys/logger';
import { isValidIdentifier } from '../sys/identifiers';
import type { TaskService } from './service';
import { TaskError, type ErrorKind } from './errors';
import { timestamp } from './timestamps';
import { writeDeleteResponse } from './bundle-files';
import { ServiceName, TypeUrl } from '../types/typeurls';
const CODES: Record<ErrorKind, Code> = {
  'not-found': Code.NOT_FOUND,
  'already-exists': Code.ALREADY_EXISTS,
  'failed-precondition': Code.FAILED_PRECONDITION,
  'invalid-argument': Code.INVALID_ARGUMENT,
  unknown: Code.UNKNOWN,
};

/**
 * The one mapping of the Task service's errors to the status containerd receives: a TaskError by
 * its kind; a TtrpcError as it is (decoding, containerd's deadline or cancellation); anything
 * else UNKNOWN with its message. Errno-carrying errors are UNKNOWN too, not ttrpc's os-error
 * mapping: the Go shim wraps its os errors with context (fmt.Errorf), which hides them from
 * ttrpc's os.IsNotExist, so containerd sees UNKNOWN there as well.
 */
export function rpcError(e: unknown): TtrpcError {
  if (e instanceof TaskError) return new TtrpcError(CODES[e.kind], e.message);
  if (e instanceof TtrpcError) return e;
  return new TtrpcError(Code.UNKNOWN, e instanceof Error ? e.message : String(e));
}

const T = containerd.task.v2;
const EMPTY = new Uint8Array(0);
export const TASK_SERVICES = [ServiceName.TaskV2, ServiceName.TaskV3];

type Decoder<T> = { decode(b: Uint8Array): T };

function decode<T>(type: Decoder<T>, payload: Uint8Array): T {
  try {
    return type.decode(payload);
  } catch (e) {
    throw new TtrpcError(Code.INTERNAL, `ttrpc: error unmarshalling payload: ${(e as Error).message}`);
  }
}

export interface RpcStats {
  calls: Map<string, { count: number; errors: number; totalMs: number; buckets: number[] }>;
  /**
   * Called after every call with its method and outcome, and whether it was a query that succeeded
   * (QUIET_QUERIES: changes nothing). The daemon's idle collector listens.
   */
  onCall?: (method: string, failed: boolean, query: boolean) => void;
}
export const LATENCY_BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/**
 * Queries that change nothing and that containerd repeats: State (6 of the 10 calls of a `ctr task
 * exec`), Stats (every 10 s under a kubelet), Pids, Connect. At debug level a line for each was more
 * than half of a shim's log lines, and each line costs the shim ~0.15 ms of CPU (the fifo write and
 * the wake-up of containerd's log reader): 13.4 -> 12.5 ms of own CPU per exec without their lines,
 * 11.9 with no debug lines at all (`node dist/bench/exec-cost.js 3 30 0 30`, 4-9 runs each). They get
 * a line only when they fail; the metrics endpoint counts every call (per-method latencies).
 */
const QUIET_QUERIES = new Set(['State', 'Pids', 'Stats', 'Connect']);

export function taskHandlers(
  svc: TaskService,
  defaultNamespace: string,
  log: Logger,
  stats?: RpcStats
): Record<string, UnaryHandler> {
  // containerd names the namespace of every call in its metadata; a per-node shim relies on it.
  const ns = (ctx: CallContext) => {
    const v = ctx.metadata['containerd-namespace-ttrpc']?.[0];
    return v && isValidIdentifier(v) ? v : defaultNamespace;
  };
  const stdio = (r: { terminal: boolean; stdin: string; stdout: string; stderr: string }) => ({
    terminal: r.terminal,
    stdin: r.stdin,
    stdout: r.stdout,
    stderr: r.stderr,
  });

  const methods: Record<string, (p: Uint8Array, ctx: CallContext) => Promise<Uint8Array> | Uint8Array> = {
    async Create(p, ctx) {
      const r = decode(T.CreateTaskRequest, p);
      const pid = await svc.create(
        {
          namespace: ns(ctx),
          id: r.id,
          bundle: r.bundle,
          stdio: stdio(r),
          rootfs: r.rootfs.map((m) => ({
            type: m.type ?? '',
            source: m.source ?? '',
            target: m.target ?? '',
            options: m.options ?? [],
          })),
          checkpoint: r.checkpoint,
          parentCheckpoint: r.parent_checkpoint,
          options: r.options ?? null,
        },
        ctx
      );
      return T.CreateTaskResponse.encode({ pid }).finish();
    },
    async Start(p, ctx) {
      const r = decode(T.StartRequest, p);
      return T.StartResponse.encode({ pid: await svc.start(ns(ctx), r.id, r.exec_id, ctx) }).finish();
    },
    async Delete(p, ctx) {
      const r = decode(T.DeleteRequest, p);
      const d = await svc.delete(ns(ctx), r.id, r.exec_id, ctx);
      const reply = T.DeleteResponse.encode({
        pid: d.pid,
        exit_status: d.exit?.status ?? 0,
        exited_at: timestamp(d.exit),
      }).finish();
      // Everything is cleaned up: the `delete` command containerd runs next only has to print this.
      if (d.bundle) writeDeleteResponse(d.bundle, reply);
      return reply;
    },
    State(p, ctx) {
      const r = decode(T.StateRequest, p);
      return T.StateResponse.encode(svc.state(ns(ctx), r.id, r.exec_id)).finish();
    },
    async Pids(p, ctx) {
      const r = decode(T.PidsRequest, p);
      const list = await svc.pids(ns(ctx), r.id, ctx);
      return T.PidsResponse.encode({
        processes: list.map(({ pid, execId }) => ({
          pid,
          info:
            execId === undefined
              ? null
              : {
                  type_url: TypeUrl.ProcessDetails,
                  value: containerd.runc.v1.ProcessDetails.encode({ exec_id: execId }).finish(),
                },
        })),
      }).finish();
    },
    async Pause(p, ctx) {
      await svc.pause(ns(ctx), decode(T.PauseRequest, p).id, ctx);
      return EMPTY;
    },
    async Resume(p, ctx) {
      await svc.resume(ns(ctx), decode(T.ResumeRequest, p).id, ctx);
      return EMPTY;
    },
    async Checkpoint(p, ctx) {
      const r = decode(T.CheckpointTaskRequest, p);
      const opts = r.options?.value?.length ? containerd.runc.v1.CheckpointOptions.decode(r.options.value) : {};
      await svc.checkpoint(ns(ctx), r.id, r.path, opts, ctx);
      return EMPTY;
    },
    async Kill(p, ctx) {
      const r = decode(T.KillRequest, p);
      await svc.kill(ns(ctx), r.id, r.exec_id, r.signal, r.all, ctx);
      return EMPTY;
    },
    async Exec(p, ctx) {
      const r = decode(T.ExecProcessRequest, p);
      await svc.exec(ns(ctx), r.id, r.exec_id, stdio(r), r.spec ?? null, ctx);
      return EMPTY;
    },
    ResizePty(p, ctx) {
      const r = decode(T.ResizePtyRequest, p);
      svc.resizePty(ns(ctx), r.id, r.exec_id, r.width, r.height);
      return EMPTY;
    },
    CloseIO(p, ctx) {
      const r = decode(T.CloseIORequest, p);
      svc.closeIO(ns(ctx), r.id, r.exec_id);
      return EMPTY;
    },
    async Update(p, ctx) {
      const r = decode(T.UpdateTaskRequest, p);
      await svc.update(ns(ctx), r.id, r.resources?.value ?? new Uint8Array(), ctx);
      return EMPTY;
    },
    async Wait(p, ctx) {
      const r = decode(T.WaitRequest, p);
      return T.WaitResponse.encode(await svc.wait(ns(ctx), r.id, r.exec_id, ctx.signal)).finish();
    },
    async Stats(p, ctx) {
      const r = decode(T.StatsRequest, p);
      const s = await svc.stats(ns(ctx), r.id);
      return T.StatsResponse.encode({ stats: { type_url: s.typeUrl, value: s.value } }).finish();
    },
    Connect(p, ctx) {
      const r = decode(T.ConnectRequest, p);
      return T.ConnectResponse.encode(svc.connect(ns(ctx), r.id)).finish();
    },
    Shutdown(p) {
      decode(T.ShutdownRequest, p);
      svc.shutdown();
      return EMPTY;
    },
  };

  const wrapped: Record<string, UnaryHandler> = {};
  for (const [name, fn] of Object.entries(methods)) {
    const quiet = QUIET_QUERIES.has(name);
    wrapped[name] = async (payload, ctx) => {
      const started = process.hrtime.bigint();
      let failed = false;
      try {
        return await fn(payload, ctx);
      } catch (e) {
        failed = true;
        throw rpcError(e);
      } finally {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        if (stats) {
          let s = stats.calls.get(name);
          if (!s)
            stats.calls.set(name, (s = { count: 0, errors: 0, totalMs: 0, buckets: LATENCY_BUCKETS_MS.map(() => 0) }));
          s.count++;
          s.totalMs += ms;
          if (failed) s.errors++;
          LATENCY_BUCKETS_MS.forEach((b, i) => {
            if (ms <= b) s!.buckets[i]++;
          });
          stats.onCall?.(name, failed, quiet && !failed);
        }
        if ((failed || !quiet) && log.enabled('debug'))
          log.debug('rpc', { method: name, namespace: ns(ctx), duration_ms: ms.toFixed(2), failed });
      }
    };
  }
  return wrapped;
}
