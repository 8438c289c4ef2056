// Makes the daemon's V8 startup snapshot next to the bundle: `node snapshot-build.js`, run by
// scripts/build.mjs and, in an installed package, by bin/containerd-shim-tsshim-v2 in the background
// after a cold start found no snapshot for its node binary and bundle (a blob is only good for the
// node binary that made it and the bundle it was made from: src/shim/node-flags.ts snapshotBlob).
//
// Measured on a 2-core VM (Node 20.20): a process that loads the daemon's modules costs ~119 ms of
// CPU from boot.js with its code cache and ~82 ms from the snapshot (`node -e 0`: ~71 ms).
//
// Only builtin modules can be required while a snapshot is built, and some of them not safely
// (node:http cannot be loaded at all). The bundle therefore runs inside a wrapper whose `require`
// gives the builtins that snapshots support, and a stand-in for everything else (koffi, node:http):
// the module loads, from the bundle's place, on first use in the process started from the blob.
// The bundle is read once, from one open file: its identity in the key is the text in the blob.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DAEMON_NODE_FLAGS, SNAPSHOT_KEY_FILE, SNAPSHOT_MAGIC, statIdentity } from '../shim/node-flags';
import { LOADED_BUNDLE, fileIdentity } from './code-cache';
import { BUNDLE_NAME } from './entry';
import { sha256Hex } from '../sys/sha256';
import { SNAPSHOT_MAIN } from './snapshot';

// Builtins loaded while the blob is built (the bundle requires them at the top of its modules);
// every other module is loaded on first use. child_process is needed at once: the reaper patches
// ChildProcess at load.
const EAGER_BUILTINS = ['fs', 'path', 'os', 'net', 'events', 'stream', 'util', 'buffer', 'v8', 'child_process'];
const LOCK_STALE_MS = 120_000;

/**
 * The script `node --build-snapshot` runs: the bundle inside a wrapper that hands it its require.
 * The bundle is compiled with --no-lazy: a blob keeps the bytecode of every function compiled while
 * it is built, and without it the first Create compiles its functions from source (V8's code cache,
 * which boot.ts uses, has them from an earlier run). Boot plus a spare's warm-up, 20 runs, median
 * CPU: 161 ms from boot.js with its code cache, 160 ms from a lazily compiled snapshot, 135 ms from
 * this one (blob 7.2 -> 7.5 MB). The flag is back to --lazy before the blob is written: V8 accepts a
 * blob only under the flags it was made with (the builder's check run below would refuse it).
 * Not strict (as boot.ts's Module.wrap), and the bundle's text starts on line 1: stack traces of a
 * process started from the blob name the build's temporary entry file, with bundle.js's line numbers.
 */
export function snapshotEntry(source: string, bundle: string, identity: string): string {
  return `var tsshimBundle = function (exports, require, module, __filename, __dirname) {${source}
};
var tsshimV8 = require('node:v8');
var tsshimBuiltin = require;
var tsshimEager = new Set(${JSON.stringify(EAGER_BUILTINS)});
var tsshimLate = null;
function tsshimRequire(id) {
  if (tsshimLate) return tsshimLate(id);
  if (tsshimEager.has(id.replace(/^node:/, ''))) return tsshimBuiltin(id);
  var real = null;
  var load = function () {
    if (!tsshimLate) throw new Error('tsshim snapshot: ' + id + ' is loaded on first use, not while the snapshot is built');
    return (real = real || tsshimLate(id));
  };
  return new Proxy({}, {
    get: function (_, k) { return k === '__esModule' ? true : k === 'default' && !('default' in load()) ? load() : load()[k]; },
    has: function (_, k) { return k === '__esModule' || k in load(); },
  });
}
tsshimV8.setFlagsFromString('--no-lazy');
tsshimBundle({}, tsshimRequire, { exports: {} }, ${JSON.stringify(bundle)}, ${JSON.stringify(path.dirname(bundle))});
tsshimV8.setFlagsFromString('--lazy');
tsshimV8.startupSnapshot.setDeserializeMainFunction(function () {
  tsshimLate = tsshimBuiltin('node:module').createRequire(${JSON.stringify(bundle)});
  globalThis[${JSON.stringify(LOADED_BUNDLE)}] = { file: ${JSON.stringify(bundle)}, identity: ${JSON.stringify(identity)}, from: 'snapshot' };
  globalThis[${JSON.stringify(SNAPSHOT_MAIN)}]();
});
`;
}

function takeLock(lock: string): boolean {
  try {
    fs.mkdirSync(lock);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  try {
    if (Date.now() - fs.statSync(lock).mtimeMs < LOCK_STALE_MS) return false; // another build runs
    fs.rmSync(lock, { recursive: true, force: true });
    fs.mkdirSync(lock);
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds the snapshot of the bundle in `dir` for the node binary `execPath` and installs it (blob,
 * then key file, each renamed into place). Returns the blob, or null when another build holds the
 * lock. Throws when the blob cannot be made or does not run: the old key (if any) stays.
 */
export function buildSnapshot(dir: string, execPath = process.execPath): string | null {
  const lock = path.join(dir, '.snapshot-build.lock');
  if (!takeLock(lock)) return null;
  const bundle = path.join(dir, BUNDLE_NAME);
  const tmp = path.join(dir, `.snapshot-build.${process.pid}`);
  try {
    const fd = fs.openSync(bundle, 'r');
    let source: string;
    let st: fs.BigIntStats;
    try {
      st = fs.fstatSync(fd, { bigint: true });
      source = fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
    const key = `${statIdentity(execPath)} ${statIdentity(bundle)}`;
    // The file read is the one the key names (statIdentity follows the path, fstat the open file).
    if (fileIdentity(fs.statSync(bundle, { bigint: true })) !== fileIdentity(st)) throw new Error('bundle replaced');
    fs.mkdirSync(tmp, { recursive: true });
    const entry = path.join(tmp, 'snapshot-entry.js');
    const blobTmp = path.join(tmp, 'snapshot.blob');
    fs.writeFileSync(entry, snapshotEntry(source, bundle, fileIdentity(st)));
    const run = (args: string[]): string =>
      execFileSync(execPath, args, { cwd: '/', encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    run([...DAEMON_NODE_FLAGS, '--snapshot-blob', blobTmp, '--build-snapshot', entry]);
    // A blob that does not start is never installed (a bad blob crashes node before our code runs).
    const out = run([...DAEMON_NODE_FLAGS, '--snapshot-blob', blobTmp, path.join(dir, 'boot.js'), '-v']);
    if (!out.includes('Version:')) throw new Error(`the snapshot does not start: ${out}`);
    const name = `snapshot-${sha256Hex(key).slice(0, 16)}.blob`;
    fs.renameSync(blobTmp, path.join(dir, name));
    const keyTmp = path.join(tmp, SNAPSHOT_KEY_FILE);
    fs.writeFileSync(keyTmp, `${SNAPSHOT_MAGIC} ${key} ${name}\n`, { mode: 0o644 });
    fs.renameSync(keyTmp, path.join(dir, SNAPSHOT_KEY_FILE));
    // Blobs of other keys are stale: no launcher picks them (their key no longer matches).
    for (const f of fs.readdirSync(dir))
      if (/^snapshot-[0-9a-f]{16}\.blob$/.test(f) && f !== name) fs.rmSync(path.join(dir, f), { force: true });
    return path.join(dir, name);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

if (require.main === module) {
  try {
    const blob = buildSnapshot(path.resolve(process.argv[2] ?? __dirname));
    if (blob && process.argv.includes('--print')) process.stdout.write(blob + '\n');
  } catch (e) {
    process.stderr.write(`snapshot-build: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
