// Test root filesystems and images built from busybox-static: a plain directory for
// `ctr run --rootfs`, and OCI image tarballs for `ctr images import` + `ctr run <image>` (so the
// snapshotter's mounts reach the shim in CreateTaskRequest.rootfs).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { Containerd } from './harness';

const LAYOUT_VERSION = 1; // bump when the rootfs layout below changes, to invalidate caches
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** `ctr run --rootfs` gives the process no PATH (only images carry one): add these to run `sh` by name. */
export const PATH_ENV_ARGS = ['--env', DEFAULT_PATH];

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Buffer {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().trim()}`);
  return r.stdout;
}

function findBusybox(): string {
  for (const p of BUSYBOX_CANDIDATES) {
    if (!fs.existsSync(p)) continue;
    // A dynamically linked busybox would not run inside a rootfs without its libraries.
    const file = spawnSync('file', ['-L', p]).stdout?.toString() ?? '';
    if (file && !/statically linked|static-pie/.test(file)) continue;
    return p;
  }
  throw new Error('static busybox not found: apt-get install busybox-static');
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes a busybox rootfs into an empty (or missing) directory. */
export function writeBusyboxRootfs(target: string): void {
  const busybox = findBusybox();
  fs.mkdirSync(target, { recursive: true });
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'run',
    'root',
    'var',
    'home',
    'tmp',
  ]) {
    fs.mkdirSync(path.join(target, d), { recursive: true });
  }
  fs.chmodSync(path.join(target, 'tmp'), 0o1777);
  fs.copyFileSync(busybox, path.join(target, 'bin/busybox'));
  fs.chmodSync(path.join(target, 'bin/busybox'), 0o755);
  // `busybox --list` is what `busybox --install -s` would link; do it ourselves into /bin.
  const applets = run(busybox, ['--list'])
    .toString()
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const applet of applets) {
    if (applet === 'busybox' || applet.includes('/')) continue;
    const link = path.join(target, 'bin', applet);
    if (!fs.existsSync(link)) fs.symlinkSync('busybox', link);
  }
  if (!fs.existsSync(path.join(target, 'bin/sh'))) fs.symlinkSync('busybox', path.join(target, 'bin/sh'));
  fs.writeFileSync(
    path.join(target, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n'
  );
  fs.writeFileSync(path.join(target, 'etc/group'), 'root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n');
  fs.writeFileSync(path.join(target, 'etc/hosts'), '127.0.0.1 localhost\n');
  fs.writeFileSync(path.join(target, 'etc/resolv.conf'), '');
  fs.writeFileSync(path.join(target, 'etc/hostname'), 'tsshim\n');
}

let cachedBase: string | undefined;

/**
 * The shared, read-only-by-convention busybox rootfs, built once and cached under the temp dir
 * (keyed by busybox's hash). Use {@link makeRootfs} for a directory a container may write to.
 */
export function busyboxRootfs(): string {
  if (cachedBase && fs.existsSync(path.join(cachedBase, 'bin/busybox'))) return cachedBase;
  const key = sha256(fs.readFileSync(findBusybox())).slice(0, 12) + `-v${LAYOUT_VERSION}`;
  const dir = path.join(os.tmpdir(), `tsshim-rootfs-${key}`);
  if (!fs.existsSync(path.join(dir, '.complete'))) {
    // Build aside then rename, so concurrent test processes never see a half-built tree.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-rootfs-build-'));
    writeBusyboxRootfs(tmp);
    fs.writeFileSync(path.join(tmp, '.complete'), '');
    try {
      fs.renameSync(tmp, dir);
    } catch {
      fs.rmSync(tmp, { recursive: true, force: true }); // someone else won the race
    }
  }
  cachedBase = dir;
  return dir;
}

/** A fresh writable copy of the busybox rootfs in a new dir under `parent` (default: temp dir). */
export function makeRootfs(parent?: string): string {
  const base = busyboxRootfs();
  const dir = fs.mkdtempSync(path.join(parent ?? os.tmpdir(), 'rootfs-'));
  run('cp', ['-a', base + '/.', dir]);
  fs.rmSync(path.join(dir, '.complete'), { force: true });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// OCI image layout tarballs

export interface ImageSpec {
  /** Full image name, e.g. docker.io/tsshim/busybox:latest (goes in io.containerd.image.name). */
  name: string;
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workingDir?: string;
  labels?: Record<string, string>;
  /** Root filesystem dir for the single layer (default: the cached busybox rootfs). */
  rootfsDir?: string;
}

export interface BuiltImage {
  tarPath: string;
  name: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
  diffId: string;
}

function ociArch(): string {
  const map: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ppc64: 'ppc64le',
    s390x: 's390x',
    ia32: '386',
  };
  return map[process.arch] ?? process.arch;
}

function tagOf(name: string): string {
  const lastSlash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > lastSlash ? name.slice(colon + 1) : 'latest';
}

/** Builds an OCI image layout (one gzip layer) and packs it as a tar at `tarPath`. */
export function buildImageTar(spec: ImageSpec, tarPath: string): BuiltImage {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-image-'));
  try {
    const blobs = path.join(work, 'layout', 'blobs', 'sha256');
    fs.mkdirSync(blobs, { recursive: true });
    const writeBlob = (data: Buffer): { digest: string; size: number } => {
      const hex = sha256(data);
      fs.writeFileSync(path.join(blobs, hex), data);
      return { digest: `sha256:${hex}`, size: data.length };
    };

    const rootfs = spec.rootfsDir ?? busyboxRootfs();
    const layerTar = path.join(work, 'layer.tar');
    run('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '--exclude=./.complete',
      '-C',
      rootfs,
      '-cf',
      layerTar,
      '.',
    ]);
    const rawLayer = fs.readFileSync(layerTar);
    const diffId = `sha256:${sha256(rawLayer)}`;
    const layer = writeBlob(zlib.gzipSync(rawLayer));

    const config = {
      created: new Date(0).toISOString(),
      architecture: ociArch(),
      os: 'linux',
      config: {
        Env: spec.env ?? [DEFAULT_PATH],
        ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
        Cmd: spec.cmd ?? ['/bin/sh'],
        WorkingDir: spec.workingDir ?? '/',
        ...(spec.labels ? { Labels: spec.labels } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [{ created: new Date(0).toISOString(), created_by: 'tsshim test/e2e/rootfs.ts' }],
    };
    const configBlob = writeBlob(Buffer.from(JSON.stringify(config)));

    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configBlob },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
    };
    const manifestBlob = writeBlob(Buffer.from(JSON.stringify(manifest)));

    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifestBlob,
          platform: { architecture: ociArch(), os: 'linux' },
          annotations: {
            'io.containerd.image.name': spec.name,
            'org.opencontainers.image.ref.name': tagOf(spec.name),
          },
        },
      ],
    };
    fs.writeFileSync(path.join(work, 'layout', 'index.json'), JSON.stringify(index));
    fs.writeFileSync(path.join(work, 'layout', 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.mkdirSync(path.dirname(tarPath), { recursive: true });
    run('tar', [
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '-C',
      path.join(work, 'layout'),
      '-cf',
      tarPath,
      'oci-layout',
      'index.json',
      'blobs',
    ]);
    return {
      tarPath,
      name: spec.name,
      manifestDigest: manifestBlob.digest,
      configDigest: configBlob.digest,
      layerDigest: layer.digest,
      diffId,
    };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

export const BUSYBOX_IMAGE = 'docker.io/tsshim/busybox:latest';
export const PAUSE_IMAGE = 'docker.io/tsshim/pause:latest';

/** Busybox image whose default command is a shell. */
export function buildBusyboxImage(tarPath: string, name = BUSYBOX_IMAGE): BuiltImage {
  return buildImageTar({ name, cmd: ['/bin/sh'] }, tarPath);
}

/** A pause-like image: busybox sleeping forever (for sandbox / CRI tests). */
export function buildPauseImage(tarPath: string, name = PAUSE_IMAGE): BuiltImage {
  // busybox sleep as pid 1 ignores SIGTERM, like pause ignores nothing but KILL; good enough for a sandbox.
  return buildImageTar({ name, entrypoint: ['/bin/sleep'], cmd: ['infinity'] }, tarPath);
}

/** `ctr images import` the tarball (unpacking into the default snapshotter) and check `name` is listed. */
export async function importImage(
  containerd: Containerd,
  tarPath: string,
  name: string,
  opts: { namespace?: string; snapshotter?: string } = {}
): Promise<string> {
  const args = ['images', 'import'];
  if (opts.snapshotter) args.push('--snapshotter', opts.snapshotter);
  args.push(tarPath);
  const r = await containerd.ctr(args, { namespace: opts.namespace, timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`ctr images import failed (${r.code}): ${r.stderr.trim()}`);
  const ls = await containerd.ctr(['images', 'ls', '-q'], { namespace: opts.namespace });
  if (!ls.stdout.split('\n').includes(name)) {
    throw new Error(`image ${name} not listed after import; have: ${ls.stdout.trim().split('\n').join(', ')}`);
  }
  return name;
}

/** Build (once per process and name) and import the busybox image into a containerd. */
const imageTarCache = new Map<string, string>();
export async function ensureBusyboxImage(
  containerd: Containerd,
  opts: { namespace?: string; pause?: boolean } = {}
): Promise<string> {
  const name = opts.pause ? PAUSE_IMAGE : BUSYBOX_IMAGE;
  let tar = imageTarCache.get(name);
  if (!tar || !fs.existsSync(tar)) {
    tar = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-imgtar-')), 'image.tar');
    if (opts.pause) buildPauseImage(tar, name);
    else buildBusyboxImage(tar, name);
    imageTarCache.set(name, tar);
    const created = tar;
    process.once('exit', () => fs.rmSync(path.dirname(created), { recursive: true, force: true }));
  }
  return importImage(containerd, tar, name, { namespace: opts.namespace });
}
