// Where a shim listens. Mirrors containerd's shims (unix:///run/containerd/s/<sha256>) but hashes
// the runtime name too, so a tsshim group can never be mistaken for a runc shim group.
import { sha256Hex } from '../sys/sha256';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { DEFAULT_SOCKET_DIR, DEFAULT_STATE_DIR } from './config';

export const RUNTIME_NAME = 'io.containerd.tsshim.v2';
export const GROUP_ANNOTATION = 'io.containerd.tsshim.v2.group';
/** The Go runc shim's own grouping annotation: a drop-in groups what containerd-shim-runc-v2 groups. */
export const RUNC_GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
export const SANDBOX_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
/** Annotations that name a container's group, first non-empty one wins (bin/ sh reads the same list). */
export const GROUP_ANNOTATIONS: readonly string[] = [GROUP_ANNOTATION, RUNC_GROUP_ANNOTATION, SANDBOX_ANNOTATION];
const MAX_SOCKET_PATH = 106;
/** The one group of a per-node daemon (TSSHIM_PER_NODE=1): every container of its namespace. */
export const PER_NODE_GROUP = '.tsshim-per-node';

/** Grouping key of a container: our annotation, the runc shim's, then CRI's pod id, else the container id. */
export function groupKey(id: string, annotations: Record<string, string> | undefined): string {
  for (const key of GROUP_ANNOTATIONS) {
    const value = annotations?.[key];
    if (typeof value === 'string' && value) return value;
  }
  return id;
}

export function readAnnotations(bundle: string): Record<string, string> {
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'));
    return spec && typeof spec.annotations === 'object' && spec.annotations ? spec.annotations : {};
  } catch {
    return {}; // no readable config.json: no group annotations, and Create reports the bundle itself
  }
}

export function socketPath(
  grpcAddress: string,
  namespace: string,
  group: string,
  socketDir = DEFAULT_SOCKET_DIR
): string {
  // posix join + normalize behaves like Go's path.Join (cleans // and trailing /).
  const key = path.posix.join(grpcAddress, namespace, RUNTIME_NAME, group);
  const p = path.join(socketDir, sha256Hex(key));
  if (p.length > MAX_SOCKET_PATH) throw new Error(`socket path ${p} is too long for a unix socket`);
  return p;
}

/** The daemon's pid file, which the sh fast path of `start` reads (bin/containerd-shim-tsshim-v2). */
export function shimPidFile(socket: string, stateDir = DEFAULT_STATE_DIR): string {
  return path.join(stateDir, `${path.basename(socket)}.pid`);
}

/** A group the sh can name a file after (bin/ group_of declines any other: Node decides then). */
const PLAIN_GROUP = /^[A-Za-z0-9._:@+=,~%-]+$/;
const PLAIN_NAMESPACE = /^[A-Za-z0-9._-]+$/;

/**
 * The daemon's hash-free lookup for the sh fast path of `start` (bin/containerd-shim-tsshim-v2
 * group_lookup): `<state>/<namespace>@<group>.group` (a namespace has no `@`), holding the line
 * groupLookupLine writes. The sh finds a grouped container's shim with builtins only then: no
 * sha256sum pipeline for the socket's name, no find for the state dir's mode. '' when the names do
 * not make a plain file name (the sh then hashes, as before).
 */
export function shimGroupFile(namespace: string, group: string, stateDir = DEFAULT_STATE_DIR): string {
  if (!PLAIN_NAMESPACE.test(namespace) || !PLAIN_GROUP.test(group) || group === '.' || group === '..') return '';
  const name = `${namespace}@${group}.group`;
  return Buffer.byteLength(name) <= 255 ? path.join(stateDir, name) : '';
}

/**
 * The lookup's one line: `<socket name> <pid> <namespace> <group> <containerd address>`. It names
 * the whole key, so a lookup renamed to another group's name (by whoever can write the state dir)
 * answers for nothing. Null when the address could not be read back whole by the sh.
 */
export function groupLookupLine(
  socket: string,
  pid: number,
  namespace: string,
  group: string,
  grpcAddress: string
): string | null {
  if (!grpcAddress || /[\s\\]/.test(grpcAddress)) return null;
  return `${path.basename(socket)} ${pid} ${namespace} ${group} ${grpcAddress}\n`;
}

/** The event outbox journal of the shim on `socket` (publisher.ts OutboxJournal). */
export function shimJournalFile(socket: string, stateDir = DEFAULT_STATE_DIR): string {
  return path.join(stateDir, `${path.basename(socket)}.outbox`);
}

export function toAddress(socket: string): string {
  return `unix://${socket}`;
}

export function fromAddress(address: string): string {
  return address.trim().replace(/^unix:\/\//, '');
}

/** Atomic write (tmp + rename), as containerd reads these files on restart. */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}`);
  fs.writeFileSync(tmp, data, { mode });
  fs.renameSync(tmp, file);
}
