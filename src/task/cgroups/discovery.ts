// Finding a container's cgroup: from its init pid (/proc/<pid>/cgroup + the mount table), or from
// the OCI spec's linux.cgroupsPath. Legacy and hybrid hosts both use the v1 hierarchies (the hybrid
// host's unified mount carries no controllers); only a host whose /sys/fs/cgroup is cgroup2 is v2.
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { posix } from 'node:path';

export type CgroupHandle =
  { version: 1; paths: Record<string, string> /* controller -> absolute dir */ } | { version: 2; dir: string };

export type CgroupMode = 'unified' | 'hybrid' | 'legacy';

const CGROUP2_SUPER_MAGIC = 0x63677270;

function isCgroup2(path: string): boolean {
  try {
    return statfsSync(path).type === CGROUP2_SUPER_MAGIC;
  } catch {
    return false; // nothing mounted there: not a cgroup2 hierarchy
  }
}

/** How the host mounts cgroups. statfs failure counts as legacy (v1), as in containerd. */
export function detectCgroupMode(root = '/sys/fs/cgroup'): CgroupMode {
  if (isCgroup2(root)) return 'unified';
  return isCgroup2(posix.join(root, 'unified')) ? 'hybrid' : 'legacy';
}

export interface ProcCgroupEntry {
  id: number;
  controllers: string[];
  path: string;
}

/** Parses /proc/<pid>/cgroup: "<id>:<ctrl,ctrl>:<path>"; v2 is "0::<path>" (no controllers). */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const out: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) throw new Error(`invalid cgroup entry: ${JSON.stringify(line)}`);
    out.push({
      id: Number(line.slice(0, first)),
      controllers: line
        .slice(first + 1, second)
        .split(',')
        .filter((c) => c !== ''),
      path: line.slice(second + 1),
    });
  }
  return out;
}

export interface MountEntry {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/<pid>/mountinfo (only the fields we need). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0 || sep + 3 > f.length) continue;
    out.push({
      root: unescapeMount(f[3]),
      mountPoint: unescapeMount(f[4]),
      fsType: f[sep + 1],
      superOptions: (f[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

/** "name=systemd" names the hierarchy dir "systemd", like the Go library. */
function hierarchyDirName(controller: string): string {
  return controller.startsWith('name=') ? controller.slice(5) : controller;
}

/** Joins `rel` under `base`, never escaping above it. */
function under(base: string, rel: string): string {
  const r = posix.join('/', rel);
  return r === '/' ? posix.normalize(base) : posix.join(base, r);
}

/**
 * v1: each controller's directory. The process's path is relative to the hierarchy's mount root
 * (not "/" when we run nested inside another container's cgroup namespace). Controllers whose
 * directory does not exist are left out.
 */
export function resolveV1Paths(
  entries: ProcCgroupEntry[],
  mounts: MountEntry[],
  root: string,
  dirExists: (p: string) => boolean = existsSync
): Record<string, string> {
  const paths: Record<string, string> = {};
  for (const e of entries) {
    for (const controller of e.controllers) {
      const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes(controller));
      const mountRoot = mount?.root ?? '/';
      const rel = posix.relative(mountRoot, e.path);
      // The real mount point when it lives under `root` (co-mounted cpu,cpuacct work without
      // symlinks); otherwise the conventional <root>/<controller>.
      const base =
        mount && mount.mountPoint.startsWith(root + '/')
          ? mount.mountPoint
          : posix.join(root, hierarchyDirName(controller));
      const dir = under(base, rel);
      if (dirExists(dir)) paths[hierarchyDirName(controller)] = dir;
    }
  }
  return paths;
}

export interface DiscoveryOptions {
  /** Where /proc is (tests point it at a fixture). */
  procRoot?: string;
  /** Skip statfs: treat the host as this version. */
  version?: 1 | 2;
}

/**
 * The cgroup of a running process, or null if it cannot be found (process gone, no controller
 * directory exists). Synchronous: a few small procfs reads, done once per container.
 */
export function cgroupForPid(pid: number, root = '/sys/fs/cgroup', opts: DiscoveryOptions = {}): CgroupHandle | null {
  const procRoot = opts.procRoot ?? '/proc';
  let entries: ProcCgroupEntry[];
  try {
    entries = parseProcCgroup(readFileSync(posix.join(procRoot, String(pid), 'cgroup'), 'utf8'));
  } catch {
    return null; // the process is gone: it has no cgroup left to report
  }
  const version = opts.version ?? (detectCgroupMode(root) === 'unified' ? 2 : 1);
  if (version === 2) {
    const unified = entries.find((e) => e.id === 0 && e.controllers.length === 0);
    if (!unified) return null;
    const dir = under(root, unified.path);
    return existsSync(dir) ? { version: 2, dir } : null;
  }
  let mounts: MountEntry[] = [];
  try {
    mounts = parseMountinfo(readFileSync(posix.join(procRoot, 'self', 'mountinfo'), 'utf8'));
  } catch {
    // No mount table: fall back to <root>/<controller> with paths taken as-is.
  }
  const paths = resolveV1Paths(
    entries.filter((e) => e.controllers.length > 0),
    mounts,
    root
  );
  return Object.keys(paths).length > 0 ? { version: 1, paths } : null;
}

const V1_CONTROLLERS = [
  'blkio',
  'cpu',
  'cpuacct',
  'cpuset',
  'devices',
  'freezer',
  'hugetlb',
  'memory',
  'net_cls',
  'net_prio',
  'perf_event',
  'pids',
  'rdma',
  'systemd',
];

/** "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root slice. */
export function expandSlice(slice: string): string {
  if (!slice.endsWith('.slice') || slice.includes('/')) throw new Error(`invalid slice name ${JSON.stringify(slice)}`);
  const name = slice.slice(0, -'.slice'.length);
  if (name === '-') return '/';
  let path = '';
  let prefix = '';
  for (const part of name.split('-')) {
    if (part === '') throw new Error(`invalid slice name ${JSON.stringify(slice)}`);
    path += `/${prefix}${part}.slice`;
    prefix += `${part}-`;
  }
  return path;
}

/**
 * The cgroup path a spec's linux.cgroupsPath names, relative to the hierarchy root:
 * "/a/b" as is; the systemd form "slice:prefix:name" as "<expanded slice>/<prefix>-<name>.scope".
 */
export function cgroupPathFromSpec(cgroupsPath: string, systemd = false): string {
  if (systemd || (!cgroupsPath.startsWith('/') && cgroupsPath.split(':').length === 3)) {
    const [slice, prefix, name] = cgroupsPath.split(':');
    if (name === undefined) throw new Error(`invalid systemd cgroupsPath ${JSON.stringify(cgroupsPath)}`);
    const parent = expandSlice(slice || 'system.slice');
    const unit = name.endsWith('.slice') ? name : `${prefix ? `${prefix}-` : ''}${name}.scope`;
    return name.endsWith('.slice') ? expandSlice(name) : posix.join(parent, unit);
  }
  return posix.join('/', cgroupsPath);
}

/** The handle for a spec cgroupsPath, or null when no directory for it exists (yet). */
export function cgroupFromSpecPath(
  cgroupsPath: string,
  root = '/sys/fs/cgroup',
  opts: { systemd?: boolean; version?: 1 | 2 } = {}
): CgroupHandle | null {
  const rel = cgroupPathFromSpec(cgroupsPath, opts.systemd);
  const version = opts.version ?? (detectCgroupMode(root) === 'unified' ? 2 : 1);
  if (version === 2) {
    const dir = under(root, rel);
    return existsSync(dir) ? { version: 2, dir } : null;
  }
  const paths: Record<string, string> = {};
  for (const c of V1_CONTROLLERS) {
    const dir = under(posix.join(root, c), rel);
    if (existsSync(dir)) paths[c] = dir;
  }
  return Object.keys(paths).length > 0 ? { version: 1, paths } : null;
}
