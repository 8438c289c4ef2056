// Finding running tsshim shims: scan the shim socket dir, or read the `address` files containerd
// keeps in its state dir, then keep the sockets that answer tsshim.v1.Shim/List.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ShimClient, type ContainerRow } from './shim-client';
import { CliError } from './args';
import { bundleFile } from '../task/bundle-files';

export const DEFAULT_SOCKET_DIR = '/run/containerd/s';
const TASK_DIR = 'io.containerd.runtime.v2.task';

export interface DiscoverOptions {
  /** containerd state dir: read <state>/io.containerd.runtime.v2.task/<ns>/<id>/address. */
  state?: string;
  /** Socket dir to scan when no state dir is given (default $TSSHIM_SOCKET_DIR or /run/containerd/s). */
  socketDir?: string;
}

export interface FoundShim {
  socket: string;
  client: ShimClient;
  containers: ContainerRow[];
}

function isSocket(p: string): boolean {
  try {
    return fs.statSync(p).isSocket();
  } catch {
    return false;
  } // gone meanwhile: not a candidate
}

/** Candidate sockets, deduplicated (a group shim serves several containers on one socket). */
export function candidateSockets(opts: DiscoverOptions, env: NodeJS.ProcessEnv = process.env): string[] {
  const out = new Set<string>();
  if (opts.state) {
    const root = path.join(opts.state, TASK_DIR);
    let namespaces: string[] = [];
    try {
      namespaces = fs.readdirSync(root);
    } catch {
      throw new CliError(`no task state under ${root}`);
    }
    for (const ns of namespaces) {
      let ids: string[] = [];
      try {
        ids = fs.readdirSync(path.join(root, ns));
      } catch {
        continue;
      } // not a namespace dir (or removed meanwhile)
      for (const id of ids) {
        try {
          const address = fs.readFileSync(bundleFile(path.join(root, ns, id), 'address'), 'utf8').trim();
          const socket = address.replace(/^unix:\/\//, '');
          if (socket) out.add(socket);
        } catch {
          /* task without an address file yet */
        }
      }
    }
  } else {
    const dir = opts.socketDir || env.TSSHIM_SOCKET_DIR || DEFAULT_SOCKET_DIR;
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    } // no socket dir: no shims to find
    for (const n of names.sort()) if (isSocket(path.join(dir, n))) out.add(path.join(dir, n));
  }
  return [...out];
}

/**
 * Connects to every candidate and keeps the tsshim ones. Sockets that refuse, hang up, or answer
 * Unimplemented (another shim) are skipped silently; callers must close() the clients.
 */
export async function discoverShims(opts: DiscoverOptions, env: NodeJS.ProcessEnv = process.env): Promise<FoundShim[]> {
  const found = await Promise.all(
    candidateSockets(opts, env).map(async (socket): Promise<FoundShim | null> => {
      let client: ShimClient;
      try {
        client = await ShimClient.connect(socket);
      } catch {
        return null;
      } // stale socket, nobody serves it: skipped (see above)
      try {
        return { socket, client, containers: await client.list() };
      } catch {
        // Unimplemented: another shim (runc's); anything else: dead or foreign. Skip either way.
        client.close();
        return null;
      }
    })
  );
  return found.filter((f): f is FoundShim => f !== null);
}

export function closeAll(shims: FoundShim[]): void {
  for (const s of shims) s.client.close();
}

function looksLikePath(arg: string): boolean {
  return arg.startsWith('/') || arg.startsWith('./') || arg.startsWith('../') || isSocket(arg);
}

/**
 * A target given as a socket path, or as a container id (optionally `namespace/id`) looked up
 * among the discovered shims. The caller closes the returned client.
 */
export async function resolveShim(
  target: string,
  opts: DiscoverOptions & { namespace?: string }
): Promise<{ client: ShimClient; id: string }> {
  if (looksLikePath(target)) return { client: await ShimClient.connect(target), id: '' };
  let ns = opts.namespace;
  let id = target;
  if (!ns && target.includes('/')) [ns, id] = target.split('/', 2);
  const shims = await discoverShims(opts);
  const hits = shims.filter((s) => s.containers.some((c) => c.id === id && (!ns || c.namespace === ns)));
  for (const s of shims) if (s !== hits[0]) s.client.close();
  if (hits.length === 0)
    throw new CliError(
      `no tsshim shim holds container ${JSON.stringify(id)}${opts.state ? '' : ' (try --state <containerd state dir>)'}`
    );
  if (hits.length > 1) {
    hits[0].client.close();
    throw new CliError(
      `container ${JSON.stringify(id)} exists in several namespaces: use --namespace or <namespace>/<id>`
    );
  }
  return { client: hits[0].client, id };
}
