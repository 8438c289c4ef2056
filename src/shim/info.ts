// `-info` (containerd 2.x): a serialized containerd.types.RuntimeInfo on stdout. Features are what
// the runc binary reports with `runc features`, so containerd can gate idmapped mounts on them.
import { spawnSync } from 'node:child_process';
import { containerd, google } from '../gen/proto';
import { VERSION, REVISION } from './version';
import { RUNTIME_NAME } from './address';

export const FEATURES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/features/Features';
/** Rootfs mount types the shim mounts itself (through mount(8)), for containerd 2.x's mount manager. */
export const ALLOWED_MOUNTS = ['bind', 'rbind', 'overlay', 'tmpfs', 'ext4', 'xfs', 'btrfs', 'squashfs', 'erofs'];

export async function runtimeInfo(stdin: Buffer): Promise<Uint8Array> {
  let options: google.protobuf.IAny | null = null;
  let binary = 'runc';
  if (stdin.length) {
    options = google.protobuf.Any.decode(stdin);
    try {
      const { decodeOptions } = await import('../task/options');
      binary = decodeOptions(options).binaryName || 'runc';
    } catch { /* unknown options: features of the default runc */ }
  }
  const r = spawnSync(binary, ['features'], { timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  let features: google.protobuf.IAny | null = null;
  if (r.status === 0 && r.stdout.length) {
    try {
      JSON.parse(r.stdout.toString());
      features = { type_url: FEATURES_TYPE_URL, value: r.stdout };
    } catch { /* an old runc printing something else */ }
  }
  return containerd.types.RuntimeInfo.encode({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: REVISION },
    options,
    features,
    annotations: { 'containerd.io/runtime-allow-mounts': ALLOWED_MOUNTS.join(',') },
  }).finish();
}
