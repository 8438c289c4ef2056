// Which containerd the e2e harness starts: the apt one on PATH (1.6.20 here) by default, or a real 2.x
// release named by TSSHIM_CONTAINERD (e.g. 2.3.4), unpacked from containerd-<ver>-linux-amd64.tar.xz
// in the shared archive folder. The unpack is done once per run: into TSSHIM_CONTAINERD_CACHE when
// scripts/test.mjs gives one (it removes it at the end), else into a temp dir this process removes.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface ContainerdRelease {
  /** '1.6.20', '2.3.4', ... */
  version: string;
  major: number;
  minor: number;
  /** Where containerd, ctr and containerd-shim-runc-v2 live; null: the ones on PATH (apt). */
  binDir: string | null;
  containerd: string;
  ctr: string;
  /** The config format the release writes with `containerd config default` (2, 3 or 4). */
  configVersion: number;
}

export const RELEASE_ENV = 'TSSHIM_CONTAINERD';

/**
 * The folder holding the release archives: TSSHIM_CONTAINERD_ARCHIVES, else the first
 * `<ancestor>/shared/containerd` above the repository (../shared/containerd from a checkout).
 */
export function archiveDir(repo: string): string | null {
  const fromEnv = process.env.TSSHIM_CONTAINERD_ARCHIVES;
  if (fromEnv) return fs.existsSync(fromEnv) ? fromEnv : null;
  for (let dir = path.dirname(repo); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'shared', 'containerd');
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) return null;
  }
}

function whereArchives(repo: string): string {
  return archiveDir(repo) ?? `${process.env.TSSHIM_CONTAINERD_ARCHIVES || '../shared/containerd'} (no such folder)`;
}

export function archivePath(repo: string, version: string): string | null {
  const dir = archiveDir(repo);
  const file = dir && path.join(dir, `containerd-${version}-linux-amd64.tar.xz`);
  return file && fs.existsSync(file) ? file : null;
}

/** The requested version, or null for the default (the containerd on PATH). */
export function requestedVersion(): string | null {
  const v = process.env[RELEASE_ENV]?.trim();
  return v && v !== 'apt' && v !== 'default' ? v : null;
}

/** Why the requested release cannot run here (one line), or null when it can. */
export function releaseSkipReason(repo: string): string | null {
  const v = requestedVersion();
  if (!v) return null;
  if (archivePath(repo, v)) return null;
  return `skipped: no containerd-${v}-linux-amd64.tar.xz in ${whereArchives(repo)}`;
}

function parseVersion(v: string): { major: number; minor: number } {
  const m = /(\d+)\.(\d+)/.exec(v);
  return { major: m ? Number(m[1]) : 0, minor: m ? Number(m[2]) : 0 };
}

function configVersionOf(containerd: string): number {
  const r = spawnSync(containerd, ['config', 'default'], { encoding: 'utf8', timeout: 30_000 });
  const m = /^version = (\d+)/m.exec(r.stdout ?? '');
  return m ? Number(m[1]) : 2;
}

let ownCache: string | null = null;

function cacheRoot(): string {
  const given = process.env.TSSHIM_CONTAINERD_CACHE;
  if (given) {
    fs.mkdirSync(given, { recursive: true });
    return given;
  }
  if (!ownCache) {
    ownCache = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-containerd-'));
    const dir = ownCache;
    process.on('exit', () => {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
    });
  }
  return ownCache;
}

/** Unpack once: into <cache>/<version>, made complete under a temp name and then renamed. */
function unpack(archive: string, version: string): string {
  const root = cacheRoot();
  const dest = path.join(root, version);
  if (fs.existsSync(path.join(dest, 'bin', 'containerd'))) return path.join(dest, 'bin');
  const tmp = fs.mkdtempSync(path.join(root, `.${version}-`));
  const r = spawnSync('tar', ['-xJf', archive, '-C', tmp], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`unpacking ${archive} failed: ${r.stderr}`);
  try {
    fs.renameSync(tmp, dest);
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true }); // another test process won the race
  }
  return path.join(dest, 'bin');
}

const known = new Map<string, ContainerdRelease>();

/** The release chosen for this run (throws with the skip reason when its archive is missing). */
export function selectedRelease(repo: string): ContainerdRelease {
  return releaseFor(repo, requestedVersion());
}

/** A given release ('2.3.4'; null or 'apt' for the containerd on PATH), unpacked on first use. */
export function releaseFor(repo: string, version: string | null): ContainerdRelease {
  const v = version === 'apt' || version === 'default' ? null : version;
  const hit = known.get(v ?? 'apt');
  if (hit) return hit;
  let release: ContainerdRelease;
  if (!v) {
    const out = spawnSync('containerd', ['--version'], { encoding: 'utf8' }).stdout ?? '';
    const apt = /\sv?(\d+\.\d+\.\d+)/.exec(out)?.[1] ?? '1.6';
    release = {
      version: apt,
      ...parseVersion(apt),
      binDir: null,
      containerd: 'containerd',
      ctr: 'ctr',
      configVersion: 2,
    };
  } else {
    const archive = archivePath(repo, v);
    if (!archive) throw new Error(`containerd ${v}: no containerd-${v}-linux-amd64.tar.xz in ${whereArchives(repo)}`);
    const binDir = unpack(archive, v);
    const containerd = path.join(binDir, 'containerd');
    release = {
      version: v,
      ...parseVersion(v),
      binDir,
      containerd,
      ctr: path.join(binDir, 'ctr'),
      configVersion: configVersionOf(containerd),
    };
  }
  known.set(v ?? 'apt', release);
  return release;
}

/** Why a release cannot run here (its archive is missing), or null. */
export function releaseMissing(repo: string, version: string): string | null {
  return version === 'apt' || archivePath(repo, version)
    ? null
    : `containerd ${version}: no containerd-${version}-linux-amd64.tar.xz in ${whereArchives(repo)}`;
}
