// Before a daemon quiesces, it asks the build it would exec what it is: a child process runs the
// target entry with PROBE_ARG as its only argument (same node and flags as the daemon). A missing entry, a
// bundle that does not parse or load, a build without upgrade support, or one that does not read
// our state version is found here, with nothing touched yet.
// The probe also runs the new build's restore on this shim's state (DRY_RUN_ENV names a state
// file, src/upgrade/restore.ts dryRunRestore): a restore that throws, exits, aborts or dies of a
// signal on this state ends the upgrade here too. A build older than the dry run ignores the
// variable and only answers what it is.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { ACCEPTED_STATE_VERSIONS, STATE_VERSION } from './state';
import { DRY_RUN_ENV, PROBE_ARG } from './exec';
import { daemonNodeArgs } from '../shim/node-flags';
import { REVISION, VERSION } from '../shim/version';

export interface BuildInfo {
  version: string;
  revision: string;
  stateVersion: number;
  stateVersions: number[];
  node: string;
  /** The build runs a dry run of the restore on the state it was given (absent: an older build). */
  dryRun?: boolean;
}

/** What this build prints for a probe; `dryRun`: a dry run of the restore follows. */
export function probeAnswer(dryRun = false): BuildInfo {
  return {
    version: VERSION,
    revision: REVISION,
    stateVersion: STATE_VERSION,
    stateVersions: [...ACCEPTED_STATE_VERSIONS],
    node: process.version,
    ...(dryRun ? { dryRun: true } : {}),
  };
}

export const PROBE_MARK = 'tsshim-upgrade-probe:';
/** The line a probe prints after its dry run of the restore went through. */
export const DRY_RUN_MARK = 'tsshim-upgrade-dry-run-ok:';
/** The line a probe prints when its dry run of the restore threw (then it exits 1). */
export const DRY_RUN_FAILED_MARK = 'tsshim-upgrade-dry-run-failed:';

/** How a probe process ended, when it did not end well. */
function howItEnded(r: { error: Error | null; stderr: string }): string {
  const e = r.error as (Error & { code?: unknown; signal?: unknown; killed?: boolean }) | null;
  const parts: string[] = [];
  if (e?.killed) parts.push('did not finish in time');
  else if (typeof e?.signal === 'string' && e.signal) parts.push(`killed by ${e.signal}`);
  else if (typeof e?.code === 'number') parts.push(`exited with status ${e.code}`);
  // The native and JavaScript stack traces node prints for an abort: the first lines of anything else.
  const err = r.stderr
    .trim()
    .split('\n')
    .filter((l) => l.trim() && !/^\s*(-----|\d+: )/.test(l))
    .slice(0, 3)
    .join(' | ');
  if (err) parts.push(err);
  return parts.join(': ') || 'the probe ended without saying why';
}

/** The probe's output: run without blocking, so the daemon copies IO and answers calls meanwhile. */
function runProbe(
  entry: string,
  snapshot: boolean,
  timeoutMs: number,
  dryRunFile: string
): Promise<{ error: Error | null; stdout: string; stderr: string }> {
  const env = dryRunFile ? { ...process.env, [DRY_RUN_ENV]: dryRunFile } : process.env;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...daemonNodeArgs(entry, snapshot), PROBE_ARG], // as the exec will run it: with its snapshot, if any
      { timeout: timeoutMs, encoding: 'utf8', cwd: '/', env },
      (error, stdout, stderr) => resolve({ error, stdout: String(stdout ?? ''), stderr: String(stderr ?? '') })
    );
  });
}

/**
 * Runs the probe of `entry`; rejects with the reason it cannot take our state. `dryRunFile`: a
 * state file (writeStateFile) the probe runs the new build's restore on.
 */
export async function probeBuild(
  entry: string,
  snapshot: boolean,
  timeoutMs = 20_000,
  dryRunFile = ''
): Promise<BuildInfo> {
  if (!fs.existsSync(entry)) throw new Error(`the new build is missing: ${entry} does not exist`);
  const r = await runProbe(entry, snapshot, timeoutMs, dryRunFile);
  const line = r.stdout.split('\n').find((l) => l.startsWith(PROBE_MARK));
  if (!line) {
    const why = r.stderr.trim().split('\n').slice(0, 6).join(' | ') || r.error?.message || 'no answer to the probe';
    throw new Error(`the new build at ${entry} cannot be loaded: ${why}`);
  }
  let info: BuildInfo;
  try {
    info = JSON.parse(line.slice(PROBE_MARK.length));
  } catch {
    throw new Error(`the new build at ${entry} answered the probe with garbage`);
  }
  if (!Array.isArray(info.stateVersions) || !info.stateVersions.includes(STATE_VERSION)) {
    throw new Error(
      `the new build ${info.version} (${info.revision}) reads upgrade state versions ${JSON.stringify(info.stateVersions)}, ` +
        `this one writes version ${STATE_VERSION}: it refuses the state (a downgrade across state versions)`
    );
  }
  if (dryRunFile && info.dryRun === true) {
    const lines = r.stdout.split('\n');
    if (!lines.some((l) => l.startsWith(DRY_RUN_MARK))) {
      const failed = lines.find((l) => l.startsWith(DRY_RUN_FAILED_MARK));
      const why = failed ? failed.slice(DRY_RUN_FAILED_MARK.length).trim() : howItEnded(r);
      throw new Error(
        `the new build ${info.version} (${info.revision}) at ${entry} cannot restore this shim's state ` +
          `(its restore failed in a dry run in the probe process, nothing was touched): ${why}`
      );
    }
  }
  return info;
}
