// containerd's Tasks service over gRPC for the parts ctr cannot do for us: a task whose stdout is
// a fifo we read ourselves.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { repoRoot, type Containerd } from '../../test/e2e/harness';

type AnyClient = grpc.Client & Record<string, any>;
const clients = new Map<string, AnyClient>();

function client(c: Containerd): AnyClient {
  let cl = clients.get(c.address);
  if (!cl) {
    const def = protoLoader.loadSync(path.join(repoRoot(), 'bench', 'proto', 'tasks.proto'), { keepCase: true, longs: Number, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as any;
    cl = new pkg.containerd.services.tasks.v1.Tasks(`unix://${c.address}`, grpc.credentials.createInsecure()) as AnyClient;
    clients.set(c.address, cl);
  }
  return cl;
}

export function call<T = any>(c: Containerd, method: string, req: object, timeoutMs = 120_000): Promise<T> {
  const md = new grpc.Metadata();
  md.set('containerd-namespace', c.namespace);
  return new Promise((resolve, reject) => {
    client(c)[method](req, md, { deadline: Date.now() + timeoutMs }, (err: Error | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

export function closeTasksClient(c: Containerd): void {
  clients.get(c.address)?.close();
  clients.delete(c.address);
}
