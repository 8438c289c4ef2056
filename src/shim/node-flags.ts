// Node flags of the long-lived daemon (started by `start` or as a warm spare).
// --no-warnings: containerd reads our output.
// --expose-gc: the idle collector (idle-gc.ts) runs a full collection once the shim goes quiet.
// --max-semi-space-size=1: V8 grows its young generation to 2 x 16 MiB under load and never gives
//   it back; a shim's allocations are small and short-lived, and 1 MiB semi-spaces keep the
//   post-burst RSS ~30 MiB lower (measured with test/stress/leak-stress.ts).
// --single-threaded: V8 collects and compiles on the main thread only. Its background threads
//   (concurrent marking, sweeping, compilation) each took memory of their own (malloc arenas, stack,
//   buffers) for a heap of ~10 MiB that a shim collects in a few ms anyway: ~1.5 MiB less PSS per
//   shim process (one run, 3 shims + 2 spares each, /tmp/memprobe probe).
// --jitless: V8 only interprets (Ignition) and makes no machine code. A shim's code runs a few
//   times per operation, with seconds between: TurboFan compiled on the main thread and its code
//   was thrown away again after the idle collections (deoptimised, "weak objects"), so that work
//   never paid back. Without it (bench/exec-cost.ts 4 5 3 2000, alternated, 3-4 runs each): own
//   CPU per exec 16.1-17.7 ms against 18.3-21.5, per Stats call (mean of 3) 3.9-4.2 against
//   5.3-5.7. No executable pages either (JIT code was ~0.9 MiB resident per shim).
// --no-expose-wasm: --jitless has no WebAssembly; without this V8 prints a flag-conflict warning
//   on stderr, which containerd would read as part of start's answer.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const DAEMON_NODE_FLAGS: readonly string[] = [
  '--no-warnings',
  '--expose-gc',
  '--max-semi-space-size=1',
  '--single-threaded',
  '--jitless',
  '--no-expose-wasm',
];

// NODE_EXTRA_CA_CERTS makes Node read that file and build its whole root certificate store with it
// while it boots, before any JavaScript: ~45 ms of CPU per boot on the bench machine (OpenSSL 3's
// decoders; `node -e 0` 125 -> 77 ms task-clock without it). A shim makes no TLS connection, so a
// Node process tsshim starts boots with it empty and gets the value back first thing
// (restoreExtraCaCerts, main.ts), for the programs it starts in turn: its process.env is as if
// nothing had happened. The sh wrapper does so for the Node processes it starts, startSpare for a
// spare: each of those rewrites its /proc/<pid>/environ to its start's environment when it becomes
// a daemon (spare-identity.ts rewriteProcEnviron). A daemon spawned by Node's `start` (spawnDaemon)
// does not, so it boots with the variable as it is: its environ would show the swap.
export const EXTRA_CA_CERTS = 'NODE_EXTRA_CA_CERTS';
export const SAVED_EXTRA_CA_CERTS = 'TSSHIM_SAVED_NODE_EXTRA_CA_CERTS';

/** The environment for a Node process tsshim starts: `env` with NODE_EXTRA_CA_CERTS set aside. */
export function nodeChildEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const value = env[EXTRA_CA_CERTS];
  if (value === undefined) return env;
  return { ...env, [EXTRA_CA_CERTS]: '', [SAVED_EXTRA_CA_CERTS]: value };
}

/** Puts back what nodeChildEnv (or the sh) set aside, in this process's env. */
export function restoreExtraCaCerts(env: NodeJS.ProcessEnv = process.env): void {
  const saved = env[SAVED_EXTRA_CA_CERTS];
  if (saved === undefined) return;
  env[EXTRA_CA_CERTS] = saved;
  delete env[SAVED_EXTRA_CA_CERTS];
}

// The daemon's V8 startup snapshot (src/daemon/snapshot-build.ts makes it next to the bundle): a
// process started from it finds the shim's modules loaded instead of compiling and running them.
// A blob fits one node binary and one bundle only (another node refuses it, or worse: a truncated
// or foreign blob crashes node before any JavaScript runs), so the key file names both by identity,
// in the format of `stat -L --printf '%d:%i:%s:%.9Z '`, the way bin/containerd-shim-tsshim-v2
// checks it too: "<magic> <node identity> <bundle identity> <blob file name>".
export const SNAPSHOT_KEY_FILE = 'snapshot.key';
export const SNAPSHOT_MAGIC = 'tsshim-snapshot-1';
const BUNDLE_FILE = 'bundle.js'; // src/daemon/entry.ts BUNDLE_NAME (a lower layer cannot import it)
const BOOT_FILE = 'boot.js';

/** A file's identity as `stat -L -c '%d:%i:%s:%.9Z'` prints it: another file in its place differs. */
export function statIdentity(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  const sec = st.ctimeNs / 1_000_000_000n;
  const frac = (st.ctimeNs % 1_000_000_000n).toString().padStart(9, '0');
  return `${st.dev}:${st.ino}:${st.size}:${sec}.${frac}`;
}

/** The key a snapshot of `dir`'s bundle made by the node binary `execPath` is stored under. */
export function snapshotKey(dir: string, execPath = process.execPath): string {
  return `${statIdentity(execPath)} ${statIdentity(path.join(dir, BUNDLE_FILE))}`;
}

/**
 * The snapshot blob of the build in `dir` (the directory of its boot.js) for the node binary
 * `execPath`, or null when there is none, or it belongs to another node binary or another bundle.
 */
export function snapshotBlob(dir: string, execPath = process.execPath): string | null {
  try {
    const [magic, node, bundle, blob, ...rest] = fs
      .readFileSync(path.join(dir, SNAPSHOT_KEY_FILE), 'utf8')
      .split(/\s+/);
    if (magic !== SNAPSHOT_MAGIC || !blob || rest.some((r) => r !== '') || blob.includes('/')) return null;
    if (`${node} ${bundle}` !== snapshotKey(dir, execPath)) return null;
    const file = path.join(dir, blob);
    return fs.statSync(file).isFile() ? file : null;
  } catch {
    return null; // no key, no bundle, no blob: start from boot.js
  }
}

/**
 * Node's arguments for a daemon or spare of the build whose entry script is `entry`: the daemon
 * flags, that build's snapshot when `useSnapshot` (TSSHIM_SNAPSHOT) and it has one for this node
 * binary, then the script (which stays in argv either way: process.argv is the same with and
 * without the snapshot).
 */
export function daemonNodeArgs(entry: string, useSnapshot: boolean, execPath = process.execPath): string[] {
  const blob = useSnapshot && path.basename(entry) === BOOT_FILE ? snapshotBlob(path.dirname(entry), execPath) : null;
  return blob ? [...DAEMON_NODE_FLAGS, '--snapshot-blob', blob, entry] : [...DAEMON_NODE_FLAGS, entry];
}
