// Before a daemon quiesces, it asks the build it would exec what it is: a child process runs the
// target entry with PROBE_ARG as its only argument (same node and flags as the daemon). A missing entry, a
// bundle that does not parse or load, a build without upgrade support, or one that does not read
// our state version is found here, with nothing touched yet.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { ACCEPTED_STATE_VERSIONS, STATE_VERSION } from './state';
import { PROBE_ARG } from './exec';
import { daemonNodeArgs } from '../shim/node-flags';
import { REVISION, VERSION } from '../shim/version';

export interface BuildInfo {
  version: string;
  revision: string;
  stateVersion: number;
  stateVersions: number[];
  node: string;
}

/** What this build prints for a probe. */
export function probeAnswer(): BuildInfo {
  return {
    version: VERSION,
    revision: REVISION,
    stateVersion: STATE_VERSION,
    stateVersions: [...ACCEPTED_STATE_VERSIONS],
    node: process.version,
  };
}

export const PROBE_MARK = 'tsshim-upgrade-probe:';

/** The probe's output: run without blocking, so the daemon copies IO and answers calls meanwhile. */
function runProbe(entry: string, timeoutMs: number): Promise<{ error: Error | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...daemonNodeArgs(entry), PROBE_ARG], // as the exec will run it: with its snapshot, if any
      { timeout: timeoutMs, encoding: 'utf8', cwd: '/' },
      (error, stdout, stderr) => resolve({ error, stdout: String(stdout ?? ''), stderr: String(stderr ?? '') })
    );
  });
}

/** Runs the probe of `entry`; rejects with the reason it cannot take our state. */
export async function probeBuild(entry: string, timeoutMs = 20_000): Promise<BuildInfo> {
  if (!fs.existsSync(entry)) throw new Error(`the new build is missing: ${entry} does not exist`);
  const r = await runProbe(entry, timeoutMs);
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
  return info;
}
