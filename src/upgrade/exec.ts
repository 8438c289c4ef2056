// execve(2) for the in-place upgrade: Node 20 has no process.execve. Same pid afterwards, so the
// daemon stays the parent and subreaper of its containers and keeps every fd not marked
// close-on-exec (libuv opens almost all with O_CLOEXEC: the hand-over clears it on exactly the fds
// it passes on).
import { execve as libcExecve, setCloexec } from '../sys/libc';
import { flushDeferredLines } from '../sys/logger';
import { daemonNodeArgs } from '../shim/node-flags';
import type { ShimFlags } from '../shim/flags';

/** Environment variable naming the state file the new process restores from (read as config.upgradeStateFile). */
export const STATE_ENV = 'TSSHIM_UPGRADE_STATE';
/**
 * Set for a probe run only (read as config.upgradeDryRunFile): a state file the probe runs its
 * restore on, without taking over anything (probe.ts, restore.ts dryRunRestore).
 */
export const DRY_RUN_ENV = 'TSSHIM_UPGRADE_DRY_RUN';
/** The only argument of a probe run (see probe.ts): print what this build is and exit. */
export const PROBE_ARG = '-tsshim-upgrade-probe';

/**
 * execve(2), after the logger's deferred debug lines are written: the process image goes, and with
 * it whatever waits in memory (no 'exit' event runs). Throws (SysError) when the exec failed.
 */
export function execve(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  flushDeferredLines();
  return libcExecve(file, argv, env);
}

/** Lets exactly these fds survive the exec. */
export function keepAcrossExec(fds: number[]): void {
  for (const fd of fds) setCloexec(fd, false);
}

/** Marks them close-on-exec again (the exec did not happen). */
export function dropAtExec(fds: number[]): void {
  for (const fd of fds) {
    try {
      setCloexec(fd, true);
    } catch {
      /* closed meanwhile */
    }
  }
}

/**
 * The daemon's command line as `start` launches it (src/shim/start.ts), for another entry script;
 * `snapshot`: TSSHIM_SNAPSHOT (that build's own blob, if it has one for this node).
 */
export function daemonArgv(entry: string, flags: ShimFlags, snapshot: boolean): string[] {
  const args = [
    process.execPath,
    ...daemonNodeArgs(entry, snapshot),
    '-namespace',
    flags.namespace,
    '-id',
    flags.id,
    '-address',
    flags.address,
  ];
  if (flags.debug) args.push('-debug');
  return args;
}
