// A private containerd for end-to-end tests: its own temp dir, sockets, root and state, with
// <repo>/bin first on PATH so it finds containerd-shim-tsshim-v2. Everything it starts is found and
// stopped by pid; other containerd instances on the machine are never touched.
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { selectedRelease, releaseFor, type ContainerdRelease } from './containerd-release';
import { allPids, argvOf, pidAlive } from './proc';
import { sleep } from './wait';

// pidAlive lives with the other /proc probes; many e2e files and the bench take it from here.
export { pidAlive } from './proc';
export {
  releaseSkipReason,
  releaseMissing,
  requestedVersion,
  selectedRelease,
  releaseFor,
  type ContainerdRelease,
} from './containerd-release';

export const RUNC_RUNTIME = 'io.containerd.runc.v2';
export const TSSHIM_RUNTIME = 'io.containerd.tsshim.v2';
export const DEFAULT_NAMESPACE = 'tsshim-test';
const TASK_DIR = 'io.containerd.runtime.v2.task';
const DIR_PREFIX = 'tss-';

export interface ContainerdOptions {
  namespace?: string;
  /** containerd log level; 'debug' makes containerd pass -debug to shims. Default 'debug'. */
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** TOML text for the cri plugin; when absent the cri plugin is disabled. */
  cri?: string;
  /** Extra TOML appended at the end of config.toml (must start with its own [table] header). */
  extraToml?: string;
  /** Extra plugins to disable, e.g. 'io.containerd.snapshotter.v1.btrfs'. */
  disabledPlugins?: string[];
  /** Extra environment for containerd (and so for the shims it starts). */
  env?: Record<string, string>;
  /** How long to wait for `ctr version` to answer. Default 20 s. */
  readyTimeoutMs?: number;
  /** The containerd release to start ('2.3.4', 'apt'); default: TSSHIM_CONTAINERD's choice. */
  release?: string;
}

export interface CtrOptions {
  input?: string | Buffer;
  /**
   * Keep stdin open until stdout has this many bytes: ctr drops an EOF that arrives before the task
   * runs, and output from the task shows that it runs (a fixed delay was too short at load 20).
   */
  closeStdinAfterOutput?: number;
  timeoutMs?: number;
  namespace?: string;
  env?: Record<string, string>;
}

export interface CtrResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface Containerd {
  /** The containerd release this instance runs (TSSHIM_CONTAINERD picks it; the apt one by default). */
  release: ContainerdRelease;
  /** The ctr binary of that release (for tests that spawn ctr themselves, e.g. under a pty). */
  ctrBinary: string;
  dir: string;
  address: string;
  ttrpcAddress: string;
  root: string;
  state: string;
  namespace: string;
  configFile: string;
  logFile: string;
  /** pid of the current containerd process (changes on restart). */
  pid: number;
  /** Bundle dir containerd makes for a task: <state>/io.containerd.runtime.v2.task/<ns>/<id>. */
  bundleDir(id: string, namespace?: string): string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Start ctr and hand back the process, for long-running commands (caller must end it). */
  spawnCtr(args: string[], opts?: { namespace?: string; env?: Record<string, string> }): ChildProcess;
  /** pids of live shim processes started by this containerd (found by their -address argument). */
  shimPids(): number[];
  /** The last `bytes` of containerd's log. */
  logTail(bytes?: number): string;
  /** SIGTERM containerd (then SIGKILL), kill its shims and containers, unmount, remove the dir. */
  stop(): Promise<void>;
  /** fn runs once at the start of stop(): clients of this containerd close their channels there. */
  onStop(fn: () => void): void;
  /** SIGKILL containerd only: shims and containers keep running. */
  kill9(): Promise<void>;
  /**
   * Stop containerd only (SIGTERM, SIGKILL after a grace period) if running, then start it again on
   * the same dirs; with `release`, start that release instead (a daemon upgrade: config.toml is
   * rewritten in its format, ctr and PATH switch to its binaries).
   */
  restart(opts?: { release?: string }): Promise<void>;
}

/** The repository root: the nearest ancestor of this file that holds tsshim's package.json. */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'tsshim') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`tsshim repository root not found above ${__dirname}`);
    dir = up;
  }
}

/**
 * The PATH containerd gets: `front` dirs (e.g. a wrapper shim), our bin/, the selected release's bin
 * dir (its ctr and Go shim), then this process's PATH.
 */
export function containerdSearchPath(...front: string[]): string {
  return searchPathFor(selectedRelease(repoRoot()), front);
}

function searchPathFor(release: ContainerdRelease, front: string[]): string {
  // TSSHIM_TEST_SHIM_DIR: a dir put before ours, for experiments with a wrapped shim binary.
  const extra = process.env.TSSHIM_TEST_SHIM_DIR ? [process.env.TSSHIM_TEST_SHIM_DIR] : [];
  return [
    ...extra,
    ...front,
    path.join(repoRoot(), 'bin'),
    ...(release.binDir ? [release.binDir] : []),
    process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  ].join(':');
}

let idCounter = 0;
/** An id that is valid for containerd (letters, digits, '-') and unique across concurrent test runs. */
export function uniqueId(prefix = 't'): string {
  idCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${idCounter}`;
}

// ---------------------------------------------------------------------------------------------
// process helpers

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** Shim processes (start, daemon or delete) whose `-address` names this containerd's socket. */
/** Shims of the containerd at `address`; with spares, also tsshim's idle warm spares for it. */
function findShimPids(address: string, exclude: number, withSpares = false): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    if (pid === exclude || pid === process.pid) continue;
    const argv = argvOf(pid);
    if (!argv) continue;
    if (!withSpares && argv.includes('spare')) continue;
    for (let i = 1; i < argv.length; i++) {
      const a = argv[i];
      if (
        ((a === '-address' || a === '--address') && argv[i + 1] === address) ||
        a === `-address=${address}` ||
        a === `--address=${address}`
      ) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// teardown, usable from an async stop() and from a synchronous process 'exit' handler

interface Bundle {
  namespace: string;
  id: string;
  dir: string;
}

function listBundles(state: string): Bundle[] {
  const base = path.join(state, TASK_DIR);
  const out: Bundle[] = [];
  let namespaces: string[] = [];
  try {
    namespaces = fs.readdirSync(base);
  } catch {
    return out;
  }
  for (const ns of namespaces) {
    let ids: string[] = [];
    try {
      ids = fs.readdirSync(path.join(base, ns));
    } catch {
      continue;
    }
    for (const id of ids) out.push({ namespace: ns, id, dir: path.join(base, ns, id) });
  }
  return out;
}

/** Container processes recorded by the shim: init.pid and <exec-id>.pid in each bundle. */
function containerPids(bundle: Bundle): number[] {
  const pids: number[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(bundle.dir);
  } catch {
    return pids;
  }
  for (const n of names) {
    if (!n.endsWith('.pid') || n === 'shim.pid') continue;
    const pid = Number(fs.readFileSync(path.join(bundle.dir, n), 'utf8').trim());
    if (Number.isInteger(pid) && pid > 1) pids.push(pid);
  }
  return pids;
}

/** Runc's state dir for a bundle: options.json's root if the shim wrote one, else runc's default. */
function runcRootFor(bundle: Bundle): string {
  try {
    const opts = JSON.parse(fs.readFileSync(path.join(bundle.dir, 'options.json'), 'utf8'));
    const root = opts.root ?? opts.Root;
    if (typeof root === 'string' && root) return path.join(root, bundle.namespace);
  } catch {
    /* no options */
  }
  return path.join('/run/containerd/runc', bundle.namespace);
}

const TSSHIM_STATE_DIR = process.env.TSSHIM_STATE_DIR || '/run/tsshim';

/**
 * A killed shim leaves its socket (outside our dir, e.g. /run/containerd/s/<hash>; its bundle says
 * where) and, for tsshim, its event outbox and per-node pid file named after that socket.
 */
/**
 * The shim's address as containerd keeps it: `address` (1.6, and tsshim everywhere) or, for a shim
 * containerd 2.x started, `bootstrap.json` (2.x's Go shim writes no `address` file).
 */
export function shimAddressOf(bundleDir: string): string {
  try {
    return fs.readFileSync(path.join(bundleDir, 'address'), 'utf8').trim();
  } catch {
    return String(JSON.parse(fs.readFileSync(path.join(bundleDir, 'bootstrap.json'), 'utf8')).address ?? '');
  }
}

function removeShimSocket(bundle: Bundle): void {
  try {
    const address = shimAddressOf(bundle.dir);
    if (!address.startsWith('unix:///')) return;
    const socket = address.slice('unix://'.length);
    for (const ext of ['.outbox', '.pid'])
      fs.rmSync(path.join(TSSHIM_STATE_DIR, path.basename(socket) + ext), { force: true });
    if (fs.lstatSync(socket).isSocket()) fs.unlinkSync(socket);
  } catch {
    /* no address file or socket already gone */
  }
}

/**
 * A per-node tsshim outlives its last container, so no bundle names its socket: its pid file does.
 * Files of per-node shims that are no longer alive are removed (never those of a live shim), and
 * the group lookups of any shim that is gone.
 */
function removeDeadPerNodeShimFiles(): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync(TSSHIM_STATE_DIR);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.endsWith('.pid'))) {
    const base = name.slice(0, -4);
    let pid = 0;
    try {
      pid = Number(fs.readFileSync(path.join(TSSHIM_STATE_DIR, name), 'utf8'));
    } catch {
      continue;
    }
    if (pid > 0 && pidAlive(pid)) continue;
    for (const f of [name, `${base}.outbox`]) fs.rmSync(path.join(TSSHIM_STATE_DIR, f), { force: true });
    fs.rmSync(path.join(process.env.TSSHIM_SOCKET_DIR || '/run/containerd/s', base), { force: true });
  }
  // A group lookup (src/shim/address.ts shimGroupFile) of a shim that is gone: `<socket> <pid> ...`.
  for (const name of names.filter((n) => n.endsWith('.group'))) {
    let pid = 0;
    try {
      pid = Number(fs.readFileSync(path.join(TSSHIM_STATE_DIR, name), 'utf8').split(' ')[1]);
    } catch {
      continue;
    }
    if (!(pid > 0 && pidAlive(pid))) fs.rmSync(path.join(TSSHIM_STATE_DIR, name), { force: true });
  }
}

/** tsshim's warm spares for this containerd were killed with it: their pool goes too. */
function removeSparePool(address: string): void {
  const hash = createHash('sha256').update(address).digest('hex').slice(0, 16);
  fs.rmSync(path.join(TSSHIM_STATE_DIR, 'spares', hash), { recursive: true, force: true });
}

function mountPointsUnder(dir: string): string[] {
  let info = '';
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const points = new Set<string>();
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = fields[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || mp.startsWith(prefix)) points.add(mp);
  }
  // Deepest first so nested mounts go before their parents.
  return [...points].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

function unmountAllUnder(dir: string): void {
  for (let round = 0; round < 3; round++) {
    const points = mountPointsUnder(dir);
    if (points.length === 0) return;
    for (const mp of points) {
      const r = spawnSync('umount', [mp], { stdio: 'ignore' });
      if (r.status !== 0) spawnSync('umount', ['-l', mp], { stdio: 'ignore' });
    }
  }
}

function killAndWait(pids: number[], graceMs: number): void {
  for (const pid of pids) signalPid(pid, 'SIGKILL');
  const deadline = Date.now() + graceMs;
  while (pids.some(pidAlive) && Date.now() < deadline) sleepSync(20);
}

interface Instance {
  dir: string;
  address: string;
  state: string;
  currentPid: () => number;
  torn: boolean;
}

/** Kill this instance's shims and containers, clean runc state, unmount and remove the dir. */
function teardownSync(inst: Instance): void {
  if (inst.torn) return;
  inst.torn = true;
  const bundles = listBundles(inst.state);
  // Containers first: killing a pid namespace's init takes the rest of it down.
  killAndWait(bundles.flatMap(containerPids), 3000);
  killAndWait(findShimPids(inst.address, inst.currentPid(), true), 3000);
  for (const b of bundles) {
    spawnSync('runc', ['--root', runcRootFor(b), 'delete', '--force', b.id], { stdio: 'ignore', timeout: 10_000 });
    removeShimSocket(b);
  }
  removeSparePool(inst.address);
  removeDeadPerNodeShimFiles();
  unmountAllUnder(inst.dir);
  try {
    fs.rmSync(inst.dir, { recursive: true, force: true, maxRetries: 3 });
  } catch (err) {
    process.stderr.write(`harness: could not remove ${inst.dir}: ${(err as Error).message}\n`);
  }
}

const live = new Set<Instance>();
let exitHookInstalled = false;

function cleanupLiveSync(): void {
  for (const inst of live) {
    signalPid(inst.currentPid(), 'SIGKILL');
    killAndWait([inst.currentPid()], 2000);
    teardownSync(inst);
  }
  live.clear();
}

/** A crashed or interrupted test must not leave containerd, shims or containers behind. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', cleanupLiveSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupLiveSync();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/**
 * Tear down instances left by test processes that died without running their exit hook (SIGKILL):
 * a tss-* dir whose owner pid is gone. Its containerd is recognised by its --config argument.
 */
export function sweepStaleInstances(parent = '/tmp'): string[] {
  const swept: string[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return swept;
  }
  for (const name of names) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = path.join(parent, name);
    let owner: number;
    try {
      owner = Number(fs.readFileSync(path.join(dir, 'owner'), 'utf8').trim());
    } catch {
      continue;
    }
    if (!Number.isInteger(owner) || owner <= 0 || pidAlive(owner)) continue;
    const config = path.join(dir, 'config.toml');
    const daemons = allPids().filter((pid) => {
      const argv = argvOf(pid);
      return !!argv && argv.includes(config) && path.basename(argv[0]) === 'containerd';
    });
    killAndWait(daemons, 3000);
    teardownSync({
      dir,
      address: path.join(dir, 'c.sock'),
      state: path.join(dir, 'state'),
      currentPid: () => -1,
      torn: false,
    });
    swept.push(dir);
  }
  return swept;
}

// ---------------------------------------------------------------------------------------------
// config and start-up

function tomlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid TOML basic string for the paths we write
}

/** The cri plugin's parts: 2.x split it into a gRPC service, a runtime and an images plugin. */
const CRI_PLUGINS: Record<number, string[]> = {
  2: ['io.containerd.grpc.v1.cri'],
  3: ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images'],
};

/**
 * config.toml in the release's own format: version 2 (1.6), 3 (2.0-2.2) or 4 (2.3, where the
 * gRPC and ttrpc listeners became server plugins).
 */
export function renderConfig(dir: string, opts: ContainerdOptions, configVersion = 2): string {
  const criPlugins = CRI_PLUGINS[Math.min(configVersion, 3)];
  const disabled = [...(opts.cri ? [] : criPlugins), ...(opts.disabledPlugins ?? [])];
  const listeners =
    configVersion >= 4
      ? [
          `[plugins."io.containerd.server.v1.grpc"]`,
          `  address = ${tomlString(path.join(dir, 'c.sock'))}`,
          '',
          `[plugins."io.containerd.server.v1.ttrpc"]`,
          `  address = ${tomlString(path.join(dir, 'c.sock.ttrpc'))}`,
        ]
      : [
          '[grpc]',
          `  address = ${tomlString(path.join(dir, 'c.sock'))}`,
          '',
          '[ttrpc]',
          `  address = ${tomlString(path.join(dir, 'c.sock.ttrpc'))}`,
        ];
  const lines = [
    `version = ${configVersion}`,
    `root = ${tomlString(path.join(dir, 'root'))}`,
    `state = ${tomlString(path.join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(tomlString).join(', ')}]`,
    '',
    ...listeners,
    '',
    '[debug]',
    `  level = ${tomlString(opts.logLevel ?? 'debug')}`,
    '',
    // Keep the opt plugin from creating /opt/containerd on the host.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlString(path.join(dir, 'opt'))}`,
    '',
  ];
  if (opts.cri) lines.push(opts.cri, '');
  if (opts.extraToml) lines.push(opts.extraToml, '');
  return lines.join('\n');
}

function runCapture(
  cmd: string,
  args: string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    input?: string | Buffer;
    closeStdinAfterOutput?: number;
    timeoutMs?: number;
  }
): Promise<CtrResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let outBytes = 0;
    child.stdout!.on('data', (d: Buffer) => {
      out.push(d);
      outBytes += d.length;
      if (opts.closeStdinAfterOutput && outBytes >= opts.closeStdinAfterOutput) closeStdin();
    });
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.stdin!.on('error', () => {
      /* ctr may exit before reading stdin */
    });
    if (opts.input !== undefined) child.stdin!.write(opts.input);
    const closeStdin = (): void => {
      child.stdin!.end();
    };
    if (!opts.closeStdinAfterOutput) closeStdin();
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) signalPid(child.pid, 'SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut });
    });
  });
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.removeListener('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  installExitHook();
  const repo = repoRoot();
  // Short parent: the gRPC socket path must stay under 108 bytes.
  const parent = os.tmpdir().length < 40 ? os.tmpdir() : '/tmp';
  sweepStaleInstances(parent);
  const dir = fs.mkdtempSync(path.join(parent, DIR_PREFIX));
  const address = path.join(dir, 'c.sock');
  const ttrpcAddress = address + '.ttrpc';
  if (Buffer.byteLength(ttrpcAddress) >= 100) throw new Error(`socket path too long: ${ttrpcAddress}`);
  const root = path.join(dir, 'root');
  const state = path.join(dir, 'state');
  const configFile = path.join(dir, 'config.toml');
  const logFile = path.join(dir, 'containerd.log');
  const namespace = opts.namespace ?? DEFAULT_NAMESPACE;
  let release = opts.release ? releaseFor(repo, opts.release) : selectedRelease(repo);
  fs.writeFileSync(configFile, renderConfig(dir, opts, release.configVersion));
  // Marks the dir as ours for anyone sweeping leftovers: the owning test process and the config.
  fs.writeFileSync(path.join(dir, 'owner'), `${process.pid}\n`);

  // A 2.x release's bin dir comes right after ours: io.containerd.runc.v2 then resolves to that
  // release's Go shim, io.containerd.tsshim.v2 to ours. ctr 2.2+ warns about cgroup v1 on stderr at
  // every call unless told not to.
  const envFor = (r: ContainerdRelease): NodeJS.ProcessEnv => ({
    ...process.env,
    PATH: searchPathFor(r, []),
    CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS: '1',
    ...opts.env,
  });
  let env = envFor(release);
  let child!: ChildProcess;
  const inst: Instance = { dir, address, state, currentPid: () => child?.pid ?? -1, torn: false };
  const stopHooks: (() => void)[] = [];
  live.add(inst);

  const launch = async (): Promise<void> => {
    const logFd = fs.openSync(logFile, 'a');
    try {
      child = spawn(release.containerd, ['--config', configFile], { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    child.on('error', () => {
      /* reported through the readiness wait below */
    });
    child.unref(); // a test that forgets stop() must still end; the exit hook cleans up
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
        throw new Error(
          `containerd exited during start-up (code ${child.exitCode}, signal ${child.signalCode}); log tail:\n${tail(logFile, 4000)}`
        );
      }
      if (fs.existsSync(address)) {
        const r = await runCapture(release.ctr, ['--address', address, 'version'], { env, timeoutMs: 5000 });
        if (r.code === 0) return;
      }
      if (Date.now() > deadline) {
        signalPid(child.pid, 'SIGKILL');
        throw new Error(
          `containerd did not become ready within ${opts.readyTimeoutMs ?? 20_000} ms; log tail:\n${tail(logFile, 4000)}`
        );
      }
      await sleep(50);
    }
  };

  const stopDaemon = async (sig: NodeJS.Signals, graceMs: number): Promise<void> => {
    if (!child.pid) return;
    signalPid(child.pid, sig);
    if (!(await waitForExit(child, graceMs))) {
      signalPid(child.pid, 'SIGKILL');
      await waitForExit(child, 5000);
    }
  };

  try {
    await launch();
  } catch (err) {
    if (child?.pid) signalPid(child.pid, 'SIGKILL');
    if (child) await waitForExit(child, 5000);
    teardownSync(inst);
    live.delete(inst);
    throw err;
  }

  const ctrEnv = (extra?: Record<string, string>): NodeJS.ProcessEnv => ({ ...env, ...extra });
  const baseArgs = (ns?: string): string[] => ['--address', address, '--namespace', ns ?? namespace];

  const api: Containerd = {
    get release() {
      return release;
    },
    get ctrBinary() {
      return release.ctr;
    },
    dir,
    address,
    ttrpcAddress,
    root,
    state,
    namespace,
    configFile,
    logFile,
    get pid() {
      return child.pid ?? -1;
    },
    bundleDir: (id, ns) => path.join(state, TASK_DIR, ns ?? namespace, id),
    ctr: (args, o = {}) =>
      runCapture(release.ctr, [...baseArgs(o.namespace), ...args], {
        env: ctrEnv(o.env),
        input: o.input,
        closeStdinAfterOutput: o.closeStdinAfterOutput,
        timeoutMs: o.timeoutMs,
      }),
    spawnCtr: (args, o = {}) =>
      spawn(release.ctr, [...baseArgs(o.namespace), ...args], { env: ctrEnv(o.env), stdio: 'pipe' }),
    shimPids: () => findShimPids(address, child.pid ?? -1),
    onStop: (fn) => {
      stopHooks.push(fn);
    },
    logTail: (bytes = 8000) => tail(logFile, bytes),
    async stop() {
      if (inst.torn) return;
      for (const fn of stopHooks.splice(0)) fn();
      await stopDaemon('SIGTERM', 10_000);
      teardownSync(inst);
      live.delete(inst);
    },
    async kill9() {
      if (!child.pid) return;
      signalPid(child.pid, 'SIGKILL');
      await waitForExit(child, 5000);
    },
    async restart(o = {}) {
      if (inst.torn) throw new Error('restart after stop');
      if (child.exitCode === null && child.signalCode === null) await stopDaemon('SIGTERM', 10_000);
      if (o.release) {
        release = releaseFor(repo, o.release);
        env = envFor(release);
        fs.writeFileSync(configFile, renderConfig(dir, opts, release.configVersion));
      }
      await launch();
    },
  };
  return api;
}

function tail(file: string, bytes: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, bytes);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString();
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
