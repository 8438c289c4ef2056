// The shim's side of its V8 startup snapshot (snapshot-build.ts makes it). While the snapshot is
// built, the bundle loads every module a daemon, a spare or a cold start's claim runs, and runs the
// pure JavaScript of the first Create (protobuf, mount options) so that V8 keeps that code compiled
// in the blob; main() then runs in the process started from the blob, with its own argv and env.
// Nothing here may touch koffi, spawn, open or keep a handle, or read the environment: all of that
// would be frozen into the blob (or refuses to be); it happens after deserialisation, as it would
// without a snapshot.
/** Where the bundle leaves main for the snapshot's deserialise function (snapshot-build.ts). */
export const SNAPSHOT_MAIN = '__tsshimSnapshotMain';

/**
 * True inside `node --build-snapshot` (snapshot-build.ts runs it so). node:v8 is loaded only then:
 * it costs a fresh process ~4-9 ms (with internal/heap_utils and promise_hooks), and nothing else in
 * a shim process needs it.
 */
export function buildingSnapshot(execArgv = process.execArgv): boolean {
  if (!execArgv.includes('--build-snapshot')) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- only while a snapshot is built
  const v8: typeof import('node:v8') = require('node:v8');
  return v8.startupSnapshot?.isBuildingSnapshot?.() ?? false;
}

/* eslint-disable @typescript-eslint/no-require-imports -- loaded while the snapshot is built, never in a plain start */
export function prepareSnapshot(run: () => void): void {
  // What main.ts imports lazily for `claim`, `spare` and the daemon, and what those import lazily.
  require('../shim/spare');
  require('./serve');
  require('./code-cache');
  require('./entry');
  require('../shim/bootstrap');
  require('../shim/start-options');
  require('../shim/start');
  require('../shim/warm-up');
  require('../shim/idle-gc');
  require('../shim/publisher');
  require('../ttrpc');
  require('../task/options');
  require('../task/cgroups/discovery');
  require('../runc/client');
  require('../sys/reaper');
  require('../task/io');
  require('../task/events');
  // The first Create's pure JavaScript, compiled now (a snapshot keeps the bytecode of what ran).
  require('../shim/warm-up').exerciseTaskCodecs(require('../gen/proto'));
  const { mountCall } = require('../task/mount-options');
  mountCall('overlay', ['index=off', 'workdir=/w', 'upperdir=/u', 'lowerdir=/l']);
  (globalThis as Record<string, unknown>)[SNAPSHOT_MAIN] = run;
}
/* eslint-enable @typescript-eslint/no-require-imports */
