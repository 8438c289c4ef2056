// `-info` (containerd 2.x): a serialized containerd.types.RuntimeInfo on stdout.
// What containerd sends (core/runtime/v2 getRuntimeInfo): `<shim> -info`, no other flags, stdin =
// the serialized runtime options Any of the RuntimeRequest (not the RuntimeRequest itself), or
// nothing. It decodes stdout with proto.Unmarshal and, for idmapped mounts and CRI, the features
// Any with typeurl: type_url types.containerd.io/opencontainers/runtime-spec/1/features/Features
// and a JSON value (the registered non-proto Go type), i.e. exactly what `runc features` prints.
import { spawnSync } from 'node:child_process';
import { containerd, google } from '../gen/proto';
import { VERSION, REVISION } from './version';
import { RUNTIME_NAME } from './address';
import { strictReader } from './bootstrap';
import { TypeUrl } from '../types/typeurls';

export const FEATURES_TYPE_URL = TypeUrl.OciFeatures;
/** Deprecated by containerd 2.4 (BootstrapResult MountCapabilities) but still read for non-runc shims. */
export const ALLOW_MOUNTS_ANNOTATION = 'containerd.io/runtime-allow-mounts';
/** Rootfs mount types the shim mounts itself (through mount(8)), for containerd 2.x's mount manager. */
export const ALLOWED_MOUNTS = ['bind', 'rbind', 'overlay', 'tmpfs', 'ext4', 'xfs', 'btrfs', 'squashfs', 'erofs'];

/** Runs `<binary> features`; its stdout, or null when the runtime has no such command. */
export type FeaturesProbe = (binary: string) => Buffer | null;

export const runtimeFeatures: FeaturesProbe = (binary) => {
  const r = spawnSync(binary, ['features'], { timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 && r.stdout.length ? r.stdout : null;
};

export async function runtimeInfo(stdin: Buffer, probe: FeaturesProbe = runtimeFeatures): Promise<Uint8Array> {
  let options: google.protobuf.IAny | null = null;
  let binary = 'runc';
  if (stdin.length) {
    try {
      options = google.protobuf.Any.decode(strictReader(stdin));
    } catch (e) {
      throw new Error(`failed to read runtime options from stdin: ${(e as Error).message}`);
    }
    try {
      const { decodeOptions } = await import('../task/options');
      binary = decodeOptions(options).binaryName || 'runc';
    } catch {
      /* unreadable options: report the default runc's features */
    }
  }
  let features: google.protobuf.IAny | null = null;
  const out = probe(binary);
  if (out) {
    try {
      JSON.parse(out.toString());
      features = { type_url: FEATURES_TYPE_URL, value: out };
    } catch {
      /* not JSON: an old runtime printing usage; containerd could not decode it */
    }
  }
  return containerd.types.RuntimeInfo.encode({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: REVISION },
    options,
    features,
    annotations: { [ALLOW_MOUNTS_ANNOTATION]: ALLOWED_MOUNTS.join(',') },
  }).finish();
}
