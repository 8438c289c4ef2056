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
