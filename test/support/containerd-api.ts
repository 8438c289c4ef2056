// A small gRPC client for containerd's own API (Events, Tasks) for e2e tests, from the minimal
// .proto files in test/proto. The namespace travels in the `containerd-namespace` metadata header.
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';
import { repoRoot, type Containerd } from './harness';

const PROTO_FILES = ['containerd/services/events/v1/events.proto', 'containerd/services/tasks/v1/tasks.proto'];
const EVENT_PROTO_FILES = ['containerd/events/task.proto', 'containerd/events/container.proto'];
const LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';
const READY_TOPIC = '/tsshim-harness/subscribed';

function protoDir(): string {
  return path.join(repoRoot(), 'test', 'proto');
}

// ---------------------------------------------------------------------------------------------
// gRPC clients

type AnyClient = grpc.Client & Record<string, any>;
interface Clients {
  events: AnyClient;
  tasks: AnyClient;
}
const clients = new Map<string, Clients>();
let grpcPackage: any;

function loadGrpc(): any {
  if (!grpcPackage) {
    const def = protoLoader.loadSync(PROTO_FILES, {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [protoDir()],
    });
    grpcPackage = grpc.loadPackageDefinition(def);
  }
  return grpcPackage;
}

function clientsFor(containerd: Containerd): Clients {
  const address = containerd.address;
  let c = clients.get(address);
  if (!c) {
    containerd.onStop(() => closeClients(containerd));
    const pkg = loadGrpc();
    const target = `unix://${address}`;
    const creds = grpc.credentials.createInsecure();
    c = {
      events: new pkg.containerd.services.events.v1.Events(target, creds),
      tasks: new pkg.containerd.services.tasks.v1.Tasks(target, creds),
    };
    clients.set(address, c);
  }
  return c;
}

/** Any method of containerd's Tasks service (test/proto/containerd/services/tasks/v1/tasks.proto). */
export function callTasks<T = any>(
  c: Containerd,
  method: string,
  req: object,
  opts: { namespace?: string; timeoutMs?: number } = {}
): Promise<T> {
  return unary<T>(clientsFor(c).tasks, method, req, opts.namespace ?? c.namespace, opts.timeoutMs);
}

/** Close the gRPC channels to a containerd (its stop() does it; a restart may want it earlier). */
export function closeClients(containerd: Containerd): void {
  const c = clients.get(containerd.address);
  if (!c) return;
  c.events.close();
  c.tasks.close();
  clients.delete(containerd.address);
}

function nsMetadata(namespace: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('containerd-namespace', namespace);
  return md;
}

function unary<T>(client: AnyClient, method: string, req: object, namespace: string, timeoutMs = 30_000): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](
      req,
      nsMetadata(namespace),
      { deadline: Date.now() + timeoutMs },
      (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Any payloads

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function timestampToDate(ts: Timestamp | null | undefined): Date | null {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

type Decoder = (bytes: Uint8Array) => Record<string, any>;
let eventRoot: protobuf.Root | undefined;
let genRoot: any | null | undefined;

/** The generated protobufjs module of the main build (dist/src/gen/proto.js), if it was built. */
function generatedRoot(): any | null {
  if (genRoot === undefined) {
    genRoot = null;
    const file = path.join(repoRoot(), 'dist', 'src', 'gen', 'proto.js');
    if (fs.existsSync(file)) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- a path known only at run time
        genRoot = require(file);
      } catch {
        genRoot = null;
      }
    }
  }
  return genRoot;
}

function testRoot(): protobuf.Root {
  if (!eventRoot) {
    const dir = protoDir();
    const root = new protobuf.Root();
    // google/protobuf/* resolve to protobufjs's bundled copies; the rest to test/proto, then to the
    // project's own proto/ (the task events are declared there once).
    const projectProtos = path.join(repoRoot(), 'proto');
    root.resolvePath = (_origin, target) => {
      if (target.startsWith('google/protobuf/') || path.isAbsolute(target)) return target;
      const local = path.join(dir, target);
      return fs.existsSync(local) ? local : path.join(projectProtos, target);
    };
    root.loadSync(EVENT_PROTO_FILES, { keepCase: true });
    root.resolveAll();
    eventRoot = root;
  }
  return eventRoot;
}

const TO_OBJECT = { longs: Number, enums: String, defaults: true, arrays: true, objects: true } as const;

function decoderFor(typeName: string): Decoder | null {
  const gen = generatedRoot();
  if (gen) {
    let t: any = gen;
    for (const part of typeName.split('.')) t = t?.[part];
    if (t && typeof t.decode === 'function' && typeof t.toObject === 'function') {
      return (bytes) => t.toObject(t.decode(bytes), TO_OBJECT);
    }
  }
  const t = testRoot().lookup(typeName);
  if (t instanceof protobuf.Type) return (bytes) => t.toObject(t.decode(bytes), TO_OBJECT);
  return null;
}

export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** Decode an Any carrying a containerd event; `data` is null for types we have no proto for. */
export function decodeAny(any: AnyMessage | null | undefined): { type: string; data: Record<string, any> | null } {
  if (!any) return { type: '', data: null };
  const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
  const decode = decoderFor(type);
  return { type, data: decode ? decode(any.value) : null };
}

// ---------------------------------------------------------------------------------------------
// Events

export interface ContainerdEvent {
  timestamp: Date | null;
  namespace: string;
  topic: string;
  /** Protobuf type of the payload, e.g. containerd.events.TaskExit. */
  type: string;
  /** Decoded payload with proto field names (container_id, exit_status, exited_at, ...). */
  event: Record<string, any> | null;
}

export interface EventCollector {
  /** Events seen so far, in arrival order. */
  events: ContainerdEvent[];
  /** Resolves with the first (past or future) event matching `pred`; rejects after timeoutMs. */
  waitFor(pred: (e: ContainerdEvent) => boolean, timeoutMs?: number): Promise<ContainerdEvent>;
  stop(): void;
}

export interface CollectOptions {
  /** containerd filter expressions (OR-ed), e.g. 'topic=="/tasks/exit"'. Default: everything. */
  filters?: string[];
  /** Keep only events of this namespace (default: the containerd's namespace; '' = all). */
  namespace?: string;
}

/** Publish an event with an arbitrary payload (used to know when a subscription is live). */
export function publishEvent(
  containerd: Containerd,
  topic: string,
  event: AnyMessage,
  namespace?: string
): Promise<void> {
  return unary(clientsFor(containerd).events, 'Publish', { topic, event }, namespace ?? containerd.namespace);
}

/**
 * Subscribe to containerd's events. Resolves once the subscription is known to be live (a marker
 * event it published itself came back), so no event after this call can be missed.
 */
export async function collectEvents(
  containerd: Containerd,
  opts: CollectOptions | string[] = {}
): Promise<EventCollector> {
  const o: CollectOptions = Array.isArray(opts) ? { filters: opts } : opts;
  const ns = o.namespace ?? containerd.namespace;
  const marker = `${READY_TOPIC}/m${process.pid}x${Date.now()}`;
  const filters = o.filters && o.filters.length ? [...o.filters, `topic=="${marker}"`] : [];
  const call = clientsFor(containerd).events.Subscribe({ filters }, nsMetadata(ns));
  const events: ContainerdEvent[] = [];
  const waiters = new Set<{ pred: (e: ContainerdEvent) => boolean; resolve: (e: ContainerdEvent) => void }>();
  let stopped = false;
  let failure: Error | null = null;
  let live = false;
  let wake: () => void = () => {};

  call.on('data', (env: any) => {
    if (env.topic === marker) {
      live = true;
      wake();
      return;
    }
    if (env.topic.startsWith(READY_TOPIC)) return;
    if (ns && env.namespace !== ns) return;
    const { type, data } = decodeAny(env.event);
    const ev: ContainerdEvent = {
      timestamp: timestampToDate(env.timestamp),
      namespace: env.namespace,
      topic: env.topic,
      type,
      event: data,
    };
    events.push(ev);
    for (const w of [...waiters])
      if (w.pred(ev)) {
        waiters.delete(w);
        w.resolve(ev);
      }
  });
  call.on('error', (err: Error) => {
    if (stopped) return;
    failure = err;
    wake();
  });

  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    call.cancel();
  };

  // Publish the marker until it comes back: the server registers the subscriber asynchronously,
  // and it sends no response headers before the first event.
  const deadline = Date.now() + 10_000;
  while (!live) {
    if (failure) {
      stop();
      throw failure;
    }
    if (Date.now() > deadline) {
      stop();
      throw new Error('event subscription did not become live within 10 s');
    }
    await publishEvent(
      containerd,
      marker,
      { type_url: 'tsshim.test.Marker', value: new Uint8Array() },
      ns || containerd.namespace
    );
    await new Promise<void>((r) => {
      const t = setTimeout(r, 200);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  return {
    events,
    stop,
    waitFor(pred, timeoutMs = 15_000) {
      const past = events.find(pred);
      if (past) return Promise.resolve(past);
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const w = {
          pred,
          resolve: (e: ContainerdEvent) => {
            clearTimeout(timer);
            resolve(e);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(
            new Error(
              `no matching event within ${timeoutMs} ms; saw: ${events.map((e) => e.topic).join(', ') || 'none'}`
            )
          );
        }, timeoutMs);
        waiters.add(w);
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tasks

/** containerd 1.6 fills `id` (the container id for an init process) and leaves container_id empty. */
export interface TaskProcess {
  container_id: string;
  id: string;
  pid: number;
  status: 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exit_status: number;
  exited_at: Timestamp | null;
}

export async function getTask(
  c: Containerd,
  containerId: string,
  execId = '',
  namespace?: string
): Promise<TaskProcess> {
  const res = await unary<{ process: TaskProcess }>(
    clientsFor(c).tasks,
    'Get',
    { container_id: containerId, exec_id: execId },
    namespace ?? c.namespace
  );
  return res.process;
}

export async function listTasks(c: Containerd, filter = '', namespace?: string): Promise<TaskProcess[]> {
  const res = await unary<{ tasks: TaskProcess[] }>(clientsFor(c).tasks, 'List', { filter }, namespace ?? c.namespace);
  return res.tasks;
}

/** Tasks.Update with OCI LinuxResources (as JSON, the way containerd's client sends them). */
export async function updateTask(
  c: Containerd,
  containerId: string,
  resources: object,
  opts: { annotations?: Record<string, string>; namespace?: string } = {}
): Promise<void> {
  await unary(
    clientsFor(c).tasks,
    'Update',
    {
      container_id: containerId,
      resources: { type_url: LINUX_RESOURCES_TYPE_URL, value: Buffer.from(JSON.stringify(resources)) },
      annotations: opts.annotations ?? {},
    },
    opts.namespace ?? c.namespace
  );
}

export async function killTask(
  c: Containerd,
  containerId: string,
  signal: number,
  opts: { execId?: string; all?: boolean; namespace?: string } = {}
): Promise<void> {
  await unary(
    clientsFor(c).tasks,
    'Kill',
    { container_id: containerId, exec_id: opts.execId ?? '', signal, all: opts.all ?? false },
    opts.namespace ?? c.namespace
  );
}

export async function listPids(c: Containerd, containerId: string, namespace?: string): Promise<number[]> {
  const res = await unary<{ processes: { pid: number }[] }>(
    clientsFor(c).tasks,
    'ListPids',
    { container_id: containerId },
    namespace ?? c.namespace
  );
  return res.processes.map((p) => p.pid);
}

export async function waitTask(
  c: Containerd,
  containerId: string,
  opts: { execId?: string; namespace?: string; timeoutMs?: number } = {}
): Promise<{ exit_status: number; exited_at: Date | null }> {
  const res = await unary<{ exit_status: number; exited_at: Timestamp | null }>(
    clientsFor(c).tasks,
    'Wait',
    { container_id: containerId, exec_id: opts.execId ?? '' },
    opts.namespace ?? c.namespace,
    opts.timeoutMs ?? 60_000
  );
  return { exit_status: res.exit_status, exited_at: timestampToDate(res.exited_at) };
}
