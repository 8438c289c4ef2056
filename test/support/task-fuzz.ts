// Fuzzes a live shim's Task service over its socket: well-framed requests for every Task method
// with random or mutated protobuf payloads, plus corrupted and misaligned frames (test/fuzz's
// generator). Requests never name a container the caller wants to keep for a method that changes
// anything, and every path a Create or Checkpoint could write to is forced under a missing dir.
import * as net from 'node:net';
import { encodeFrame, FrameDecoder, MessageType } from '../../src/ttrpc/channel';
import { encodeRequest } from '../../src/ttrpc/codec';
import { containerd as api } from '../../src/gen/proto';
import { nextFrame, Rng } from './frame-gen';

const T = api.task.v2 as unknown as Record<
  string,
  { fromObject(o: object): object; encode(m: object): { finish(): Uint8Array } }
>;

export const TASK_METHODS: Record<string, string> = {
  State: 'StateRequest',
  Create: 'CreateTaskRequest',
  Start: 'StartRequest',
  Delete: 'DeleteRequest',
  Pids: 'PidsRequest',
  Pause: 'PauseRequest',
  Resume: 'ResumeRequest',
  Checkpoint: 'CheckpointTaskRequest',
  Kill: 'KillRequest',
  Exec: 'ExecProcessRequest',
  ResizePty: 'ResizePtyRequest',
  CloseIO: 'CloseIORequest',
  Update: 'UpdateTaskRequest',
  Wait: 'WaitRequest',
  Stats: 'StatsRequest',
  Connect: 'ConnectRequest',
  Shutdown: 'ShutdownRequest',
};
/** Methods that only read: these may name the protected container. */
const READ_ONLY = new Set(['State', 'Connect', 'Stats', 'Pids', 'Wait']);
const SERVICES = ['containerd.task.v2.Task', 'containerd.task.v3.Task'];
const SAFE_DIR = '/nonexistent-tsshim-fuzz';

export interface FuzzOptions {
  socket: string;
  namespace: string;
  /** A running container that must survive: only read-only methods may name it. */
  protectedId: string;
  messages: number;
  seed: number;
  perConnection?: number;
}

export interface FuzzStats {
  messages: number;
  connections: number;
  replies: number;
  closedByServer: number;
  stalled: number;
}

function junkString(r: Rng): string {
  switch (r.int(8)) {
    case 0:
      return '';
    case 1:
      return '../'.repeat(1 + r.int(6)) + 'etc/passwd';
    case 2:
      return 'a'.repeat(200 + r.int(200));
    case 3:
      return `fz-${r.int(1000)}`;
    case 4:
      return r.bytes(r.int(24)).toString('latin1');
    case 5:
      return '/' + r.bytes(r.int(12)).toString('hex');
    case 6:
      return '.';
    default:
      return `fz_${r.int(50)}.x-y`;
  }
}

function structured(r: Rng, method: string, protectedId: string): Uint8Array {
  const id = READ_ONLY.has(method) && r.chance(0.3) ? protectedId : junkString(r);
  const obj: Record<string, unknown> = {
    id,
    exec_id: r.chance(0.5) ? '' : junkString(r),
    bundle: `${SAFE_DIR}/${r.int(1e6)}`,
    path: `${SAFE_DIR}/cp-${r.int(1e6)}`,
    signal: r.int(70),
    all: r.chance(0.5),
    width: r.int(70000),
    height: r.int(70000),
    stdin: junkString(r),
    stdout: junkString(r),
    stderr: junkString(r),
    terminal: r.chance(0.3),
    stdin_close: r.chance(0.5),
    checkpoint: r.chance(0.1) ? `${SAFE_DIR}/ck` : '',
    now: r.chance(0.5),
    rootfs: r.chance(0.2)
      ? [
          {
            type: r.pick(['tmpfs', 'overlay', 'bind', 'zz']),
            source: junkString(r),
            target: '',
            options: [junkString(r)],
          },
        ]
      : [],
    spec: r.chance(0.5)
      ? {
          type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
          value: Buffer.from(r.chance(0.5) ? '{"args":["true"],"cwd":"/"}' : junkString(r)),
        }
      : null,
    resources: r.chance(0.5) ? { type_url: 'x', value: Buffer.from(junkString(r)) } : null,
    options: r.chance(0.3)
      ? {
          type_url: r.pick(['containerd.runc.v1.Options', 'runtimeoptions.v1.Options', 'junk']),
          value: r.bytes(r.int(40)),
        }
      : null,
  };
  // Never the protected container for methods that change something; rootfs only under SAFE_DIR bundles.
  if (!READ_ONLY.has(method) && obj.id === protectedId) obj.id = 'fz-x';
  const type = T[TASK_METHODS[method]];
  return type.encode(type.fromObject(obj)).finish();
}

function mutate(r: Rng, b: Uint8Array): Buffer {
  const out = Buffer.from(b);
  for (let i = 0, n = 1 + r.int(3); i < n && out.length; i++) {
    const at = r.int(out.length);
    if (r.chance(0.2)) return out.subarray(0, at);
    out[at] ^= 1 << r.int(8);
  }
  return out;
}

/** Keeps whatever the payload decodes to away from real paths: the last occurrence of a field wins. */
function pinPaths(method: string, payload: Buffer, r: Rng): Buffer {
  const field = (tag: number, s: string): Buffer => {
    const v = Buffer.from(s);
    return Buffer.concat([Buffer.from([tag, v.length]), v]);
  };
  if (method === 'Create') return Buffer.concat([payload, field(0x12, `${SAFE_DIR}/b${r.int(1000)}`)]);
  if (method === 'Checkpoint') return Buffer.concat([payload, field(0x12, `${SAFE_DIR}/c${r.int(1000)}`)]);
  return payload;
}

function payloadFor(r: Rng, method: string, protectedId: string): Buffer {
  const kind = TASK_METHODS[method] ? r.int(3) : 0; // unknown methods get noise
  let p: Buffer;
  if (kind === 0) p = r.bytes(r.int(160));
  else if (kind === 1) p = Buffer.from(structured(r, method, protectedId));
  else p = mutate(r, structured(r, method, protectedId));
  return pinPaths(method, p, r);
}

/** One connection: a batch of frames, then a State marker; resolves when answered, closed or stalled. */
function oneConnection(o: FuzzOptions, r: Rng, count: number, wild: boolean, stats: FuzzStats): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.createConnection(o.socket);
    let done = false;
    let markerId = 0;
    const finish = (how: 'answered' | 'closed' | 'stalled'): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (how === 'closed') stats.closedByServer++;
      if (how === 'stalled') stats.stalled++;
      sock.destroy();
      resolve();
    };
    const timer = setTimeout(() => finish('stalled'), wild ? 1000 : 5000);
    const decoder = new FrameDecoder(
      {
        frame: (h) => {
          stats.replies++;
          if (h.streamId === markerId) finish('answered');
        },
        oversize: () => {
          stats.replies++;
        },
      },
      0xffffffff
    );
    sock.on('data', (d: Buffer) => {
      try {
        decoder.push(d);
      } catch {
        finish('closed');
      }
    });
    sock.on('error', () => finish('closed'));
    sock.on('close', () => finish('closed'));
    sock.on('connect', () => {
      stats.connections++;
      let id = 1;
      const ids = { last: 1 };
      const methods = Object.keys(TASK_METHODS);
      const md = [{ key: 'containerd-namespace-ttrpc', value: r.chance(0.9) ? o.namespace : junkString(r) }];
      for (let i = 0; i < count; i++) {
        stats.messages++;
        if (r.chance(0.1)) {
          // Frame-level damage from the shared generator (misaligned only on wild connections).
          sock.write(nextFrame(r, ids, { allowOversizeLength: wild }));
          id = Math.max(id, ids.last) + 2;
          continue;
        }
        const method = r.chance(0.03) ? junkString(r) : r.pick(methods);
        const body = encodeRequest({
          service: r.chance(0.95) ? r.pick(SERVICES) : junkString(r),
          method,
          payload: payloadFor(r, method, o.protectedId),
          timeoutNano: method === 'Wait' || r.chance(0.2) ? 50e6 : 0,
          metadata: md,
        });
        sock.write(encodeFrame(id, MessageType.REQUEST, r.chance(0.05) ? r.int(8) : 0, body));
        id += 2;
        ids.last = id;
      }
      markerId = id + 2;
      const state = T.StateRequest;
      sock.write(
        encodeFrame(
          markerId,
          MessageType.REQUEST,
          0,
          encodeRequest({
            service: SERVICES[0],
            method: 'State',
            payload: Buffer.from(state.encode(state.fromObject({ id: o.protectedId })).finish()),
            metadata: [{ key: 'containerd-namespace-ttrpc', value: o.namespace }],
          })
        )
      );
    });
  });
}

export async function fuzzTaskService(o: FuzzOptions): Promise<FuzzStats> {
  const r = new Rng(o.seed);
  const stats: FuzzStats = { messages: 0, connections: 0, replies: 0, closedByServer: 0, stalled: 0 };
  const per = o.perConnection ?? 50;
  for (let sent = 0; sent < o.messages; sent += per) {
    await oneConnection(o, r, Math.min(per, o.messages - sent), r.chance(0.1), stats);
  }
  return stats;
}
