// Warm spares: a booted, idle shim that the next `start` turns into that container's daemon.
//
// Booting Node and loading the daemon costs ~200 ms, paid twice per container when `start` spawns a
// fresh daemon. A spare pays it ahead of time. bin/containerd-shim-tsshim-v2 (POSIX sh) claims one by
// renaming its directory, leaves the start request in files there and rings the `req` fifo; the
// spare runs the usual start logic (group socket, reuse), writes `out` and `status`, closes `resp`,
// and then either becomes the daemon (and spawns the next spare) or goes back to waiting.
//
// Directory per containerd (its gRPC address): <state>/spares/<sha256(address)[:16]>/<pid>/
//   req     fifo: the sh writes the claimed directory's path and a newline
//   resp    fifo: opened and closed by the spare when `out` and `status` are ready
// Files the sh leaves in the claimed directory: argv (NUL separated), env (NUL separated, `env -0`),
// cwd (the bundle), stdin (start's stdin: options or BootstrapParams), ppid (containerd's pid).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { ShimFlags } from './flags';
import { parseFlags } from './flags';
import { DAEMON_NODE_FLAGS } from './node-flags';
import { STATE_DIR } from './address';

export { STATE_DIR };
const IDLE_MS = Number(process.env.TSSHIM_SPARE_IDLE_MS) || 10 * 60_000;
const SPARE_NICE = 10;

export function sparePool(grpcAddress: string): string {
  const hash = createHash('sha256').update(grpcAddress).digest('hex').slice(0, 16);
  return path.join(STATE_DIR, 'spares', hash);
}

export function sparesEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TSSHIM_SPARES !== '0';
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

/** Live spares waiting in the pool (directories named by pid whose process exists). */
export function waitingSpares(pool: string): number[] {
  let names: string[] = [];
  try { names = fs.readdirSync(pool); } catch { return []; }
  return names.filter((n) => /^\d+$/.test(n)).map(Number).filter(alive);
}

/** Spares still booting: `.booting-<pid>` markers (hidden from the sh's claim loop). */
function bootingSpares(pool: string): number[] {
  let names: string[] = [];
  try { names = fs.readdirSync(pool); } catch { return []; }
  return names.filter((n) => /^\.booting-\d+$/.test(n)).map((n) => Number(n.slice(9))).filter((pid) => {
    if (alive(pid)) return true;
    fs.rmSync(path.join(pool, `.booting-${pid}`), { force: true });
    return false;
  });
}

/** How long after a start had to wait for a booting spare the pool holds two spares. */
const STARVED_WINDOW_MS = 30_000;

/** One spare normally; two while starts have recently had to wait for one (a burst of new shims). */
export function spareTarget(pool: string, now = Date.now()): number {
  try {
    return now - fs.statSync(path.join(pool, '.starved')).mtimeMs < STARVED_WINDOW_MS ? 2 : 1;
  } catch {
    return 1;
  }
}

/** Starts spares for this containerd until spareTarget are waiting or booting. */
export function ensureSpare(mainScript: string, flags: ShimFlags): void {
  const pool = sparePool(flags.address);
  if (!sparesEnabled()) return;
  const missing = spareTarget(pool) - waitingSpares(pool).length - bootingSpares(pool).length;
  for (let i = 0; i < missing; i++) startSpare(mainScript, flags, pool);
}

function startSpare(mainScript: string, flags: ShimFlags, pool: string): void {
  // Linux shows process.title only within the original argv's bytes: reserve room for the daemon's.
  const room = '.'.repeat(256);
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, mainScript, '-namespace', flags.namespace, '-address', flags.address, '-title-space', room, 'spare'], {
    cwd: '/', detached: true, stdio: 'ignore', env: process.env,
  });
  child.unref();
  // A spare boots while a container is being created: let the kernel favour that critical path.
  if (child.pid) { try { os.setPriority(child.pid, SPARE_NICE); } catch { /* not permitted: boot at normal priority */ } }
  if (child.pid) {
    fs.mkdirSync(pool, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(pool, `.booting-${child.pid}`), '');
  }
}

interface StartRequest { dir: string; argv: string[]; env: NodeJS.ProcessEnv; cwd: string; stdin: Buffer; containerdPid: number }

function readRequest(dir: string): StartRequest {
  const nul = (file: string) => fs.readFileSync(path.join(dir, file), 'utf8').split('\0').filter((s) => s !== '');
  const env: NodeJS.ProcessEnv = {};
  for (const kv of nul('env')) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return {
    dir,
    argv: nul('argv'),
    env,
    cwd: fs.readFileSync(path.join(dir, 'cwd'), 'utf8').trim(),
    stdin: fs.readFileSync(path.join(dir, 'stdin')),
    containerdPid: Number(fs.readFileSync(path.join(dir, 'ppid'), 'utf8').trim()) || 0,
  };
}

/**
 * Registers in the pool and resolves with the claimed directory, or null after the idle timeout or
 * once its containerd is gone (its socket file vanished): a spare never outlives its daemon.
 */
function waitForClaim(pool: string, grpcAddress: string): Promise<string | null> {
  const home = path.join(pool, String(process.pid));
  // Built under a hidden name and renamed into place: the sh only ever sees complete spares.
  const building = path.join(pool, `.new-${process.pid}`);
  fs.rmSync(building, { recursive: true, force: true });
  fs.mkdirSync(building, { recursive: true, mode: 0o700 });
  for (const f of ['req', 'resp']) execFileSync('mkfifo', ['-m', '0600', path.join(building, f)]);
  fs.renameSync(building, home);
  fs.rmSync(path.join(pool, `.booting-${process.pid}`), { force: true });
  // O_RDWR: opening never blocks and our own write end keeps the fifo from reporting EOF.
  const fd = fs.openSync(path.join(home, 'req'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  return new Promise((resolve) => {
    let buf = '';
    const retire = () => {
      fs.rmSync(home, { recursive: true, force: true });
      try { fs.rmdirSync(pool); } catch { /* other spares still there */ }
      done(null);
    };
    const done = (dir: string | null) => { clearTimeout(idle); clearInterval(watch); sock.destroy(); resolve(dir); };
    const idle = setTimeout(retire, IDLE_MS);
    const watch = setInterval(() => {
      if (!fs.existsSync(grpcAddress)) return retire();
      // A burst is over: the extra spare (the newest, so only one of them) goes.
      const waiting = waitingSpares(pool);
      if (waiting.length > spareTarget(pool) && Math.max(...waiting) === process.pid) retire();
    }, 2000);
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(buf.slice(0, nl));
    });
    sock.on('error', () => done(null));
  });
}

/** Signals the waiting sh: open `resp` for writing (retrying until its reader is there) and close it. */
async function ringResponse(dir: string): Promise<void> {
  const resp = path.join(dir, 'resp');
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(resp, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      return;
    } catch (e: any) {
      if (e.code !== 'ENXIO' || Date.now() > deadline) return; // the sh gave up: it falls back to Node
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

export async function runSpare(flags: ShimFlags): Promise<void> {
  // Load everything the daemon needs now, while nobody waits.
  const serve = await import('./serve');
  const { readStartRequest, formatStartReply } = await import('./bootstrap');
  const { startOptions } = await import('./start-options');
  const { claimGroupSocket, settleDaemon } = await import('./start');
  process.title = `containerd-shim-tsshim-v2 spare -address ${flags.address}`;
  const { warmUp } = await import('./warm-up');
  await warmUp();
  // A spare may wait for minutes: keep only what it needs resident (idle-gc.ts, trim.ts).
  (await import('./idle-gc')).collectAndTrim();
  // Loaded from the bundle without a code cache for these flags: this is the moment to write it.
  (await import('./code-cache')).saveCodeCache();
  const pool = sparePool(flags.address);
  for (;;) {
    const dir = await waitForClaim(pool, flags.address);
    if (!dir || !dir.startsWith(pool + '/')) process.exit(0);
    let out: Uint8Array | string = '';
    let status = 0;
    let become: { flags: ShimFlags; bound: import('./serve').BoundSocket; req: StartRequest } | null = null;
    try {
      const req = readRequest(dir);
      const startFlags = parseFlags(req.argv);
      const request = readStartRequest(req.stdin, req.env, startFlags);
      const opts = startOptions(request.options, startFlags);
      const claimed = await claimGroupSocket(startFlags, opts, req.cwd);
      out = formatStartReply(claimed.address, request.generation);
      if (claimed.server) {
        settleDaemon(process.pid, opts, req.containerdPid, req.cwd, claimed.address);
        become = { flags: startFlags, bound: { server: claimed.server, socket: claimed.socket, group: claimed.group }, req };
      }
    } catch (e) {
      out = `containerd-shim-tsshim-v2: ${(e as Error)?.message ?? String(e)}\n`;
      status = 1;
    }
    fs.writeFileSync(path.join(dir, 'out'), out);
    fs.writeFileSync(path.join(dir, 'status'), String(status));
    await ringResponse(dir);
    if (!become) continue; // the group already has a shim: stay a spare
    // From here on this process is the container's shim, exactly as if `start` had spawned it.
    try { os.setPriority(0, 0); } catch { /* keep the spare's priority */ }
    for (const k of Object.keys(process.env)) delete process.env[k];
    Object.assign(process.env, become.req.env);
    process.chdir(become.req.cwd);
    await serve.runDaemon(become.flags, become.bound);
    return;
  }
}
