// What makes a spare-born shim indistinguishable from a cold-started one.
//
// A cold daemon is spawned by its `start` (a child of containerd) in a new session; `start` exits, so
// the daemon's parent becomes init (or containerd's subreaper), and it inherits start's cgroups,
// rlimits, nice value and environment. A spare was booted earlier, by another shim: here it leaves
// that shim behind (spawnOutsideShims) and, when claimed, takes on the claiming start's identity
// (adoptStartIdentity). oom_score_adj and ShimCgroup are applied afterwards by settleDaemon, as for
// a cold daemon.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  getRlimit,
  isChildSubreaper,
  RLIMIT_COUNT,
  SCHED_IDLE,
  SCHED_OTHER,
  schedPolicy,
  setChildSubreaper,
  setRlimit,
  setSchedPolicy,
} from '../sys/libc';
import { listOwnChildren, Reaper } from '../sys/reaper';
import { runToExitSync } from '../sys/spawn';
import { lookPath } from '../runc/look-path';
import { overwriteOwnArea } from './proc-title';

/** Environment variable that reserves room in a spare's initial environment (see rewriteProcEnviron). */
export const ENV_ROOM_VAR = 'TSSHIM_ENV_ROOM';
export const ENV_ROOM_BYTES = 16 * 1024;

/**
 * True while a child the daemon started itself (runc, a logger) is running: an orphan made while
 * the daemon is briefly not a subreaper (a container's init when its `runc create` exits) would
 * escape the reaper.
 */
export function ownChildRunning(): boolean {
  const reaper = Reaper.instance();
  return listOwnChildren().some((pid) => reaper.startedHere(pid));
}

/**
 * Starts argv (niced, in a new session) as the child of no shim; it marks itself booting in
 * `pool` (`.booting-<pid>`) before it execs, and the marker exists when this returns: a last shim
 * leaving right after (stopSpares) must see it, or the spare would boot after every shim had gone
 * (a CI run found such a spare's half-built pool entry). The daemon is the subreaper of all its descendants, so
 * an ordinary double fork would still land under it: for the instant `setsid -f` forks and exits,
 * the daemon is not a subreaper, and the orphan goes where a cold shim goes. Callers make sure no
 * runc runs meanwhile (ownChildRunning). No shell background job: sh would ignore SIGINT and
 * SIGQUIT in it, and a cold shim does not. With `idle`, argv runs under SCHED_IDLE (chrt, from
 * util-linux as setsid): it gets a core only when nothing else wants one. Returns false when the
 * launch failed.
 */
export function spawnOutsideShims(
  argv: string[],
  env: NodeJS.ProcessEnv,
  nice: number,
  pool: string,
  idle = false
): boolean {
  const run = idle
    ? 'if command -v chrt >/dev/null; then exec chrt -i 0 nice -n "$@"; fi; exec nice -n "$@"'
    : 'exec nice -n "$@"';
  // The marker, its pid on stdout, and stdout closed: the waited-for sh reads to EOF, so the
  // marker is there when it exits (status 0 only when the pid came).
  const launch = `: > "$1/.booting-$$" && echo $$ && exec >/dev/null && shift && ${run}`;
  const waitForMarker = '[ -n "$(setsid -f /bin/sh -c "$0" sh "$@")" ]';
  const subreaper = isChildSubreaper();
  if (subreaper) setChildSubreaper(false);
  try {
    // posix_spawn, not child_process: forking the whole Node process cost the daemon ~50 page
    // faults and ~1 ms more CPU, and twice the wall time, while its loop waits for setsid's exit.
    lookPath('setsid', env.PATH ?? process.env.PATH); // throws when there is none
    const args = ['-c', waitForMarker, launch, pool, String(nice), ...argv];
    return runToExitSync('/bin/sh', args, { env, cwd: '/', timeoutMs: 10_000 }) === 0;
  } catch {
    return false; // setsid not found or not startable: no spare, as when it fails
  } finally {
    if (subreaper) setChildSubreaper(true);
  }
}

interface CgroupMount {
  dir: string;
  fstype: string;
  options: Set<string>;
}

function cgroupMounts(): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const [fstype, , superOptions = ''] = right.split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const fields = left.split(' ');
    if (fields[3] !== '/') continue; // a bind of a sub-tree: paths in /proc/<pid>/cgroup are not relative to it
    out.push({ dir: fields[4].replace(/\\040/g, ' '), fstype, options: new Set(superOptions.split(',')) });
  }
  return out;
}

/** Joins every cgroup `pid` is in (v2 and each v1 hierarchy); returns the ones it could not join. */
export function joinCgroupsOf(pid: number): string[] {
  const mine = fs.readFileSync('/proc/self/cgroup', 'utf8');
  const mounts = cgroupMounts();
  const failed: string[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    if (!line || mine.split('\n').includes(line)) continue;
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, , controllers, cgPath] = m;
    const mount =
      controllers === ''
        ? mounts.find((x) => x.fstype === 'cgroup2')
        : mounts.find((x) => x.fstype === 'cgroup' && controllers.split(',').every((c) => x.options.has(c)));
    try {
      if (!mount) throw new Error('not mounted');
      fs.writeFileSync(path.join(mount.dir, cgPath, 'cgroup.procs'), String(process.pid));
    } catch {
      failed.push(line);
    }
  }
  return failed;
}

const RLIMIT_NOFILE = 7;

/**
 * Takes on every rlimit of `pid`; returns the resources it could not set (a hard limit above ours).
 * Node raises its soft RLIMIT_NOFILE to the hard limit when it boots, so a cold daemon (a Node
 * process spawned by Node) has soft = hard there: so does a spare-born one.
 */
export function copyRlimitsOf(pid: number): number[] {
  const failed: number[] = [];
  for (let r = 0; r < RLIMIT_COUNT; r++) {
    try {
      const want = getRlimit(pid, r);
      if (r === RLIMIT_NOFILE) want.copy(want, 0, 8, 16);
      if (!want.equals(getRlimit(0, r))) setRlimit(r, want);
    } catch {
      failed.push(r);
    }
  }
  return failed;
}

const ownThreads = () => fs.readdirSync('/proc/self/task').map(Number);

/** Linux nice values are per thread: every thread of ours takes `nice`. */
export function setNiceOfAllThreads(nice: number): void {
  for (const tid of ownThreads()) {
    try {
      os.setPriority(tid, nice);
    } catch {
      /* the thread ended meanwhile */
    }
  }
}

/** Every thread of ours takes `pid`'s nice value. */
export function copyNiceOf(pid: number): void {
  setNiceOfAllThreads(os.getPriority(pid));
}

/**
 * Scheduling policies are per thread too: every thread of ours takes the policy of `pid`'s main
 * thread (SCHED_OTHER for a start that containerd spawned normally), then its nice value. Throws
 * when a thread cannot leave its policy (EPERM: leaving SCHED_IDLE without CAP_SYS_NICE).
 */
export function copySchedulingOf(pid: number): void {
  const want = schedPolicy(pid);
  for (const tid of ownThreads()) {
    try {
      const have = schedPolicy(tid);
      if (have.policy !== want.policy || have.priority !== want.priority) setSchedPolicy(tid, want);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ESRCH') throw e; // ESRCH: the thread ended meanwhile
    }
  }
  copyNiceOf(pid);
}

/** Threads of ours under SCHED_IDLE (a spare that booted so) go back to SCHED_OTHER; nice values stay. */
export function leaveIdleScheduling(): void {
  for (const tid of ownThreads()) {
    try {
      if (schedPolicy(tid).policy === SCHED_IDLE) setSchedPolicy(tid, { policy: SCHED_OTHER, priority: 0 });
    } catch {
      /* the thread ended, or we may not leave it (no CAP_SYS_NICE): it stays idle */
    }
  }
}

/**
 * Makes /proc/self/environ (the initial environment block the kernel shows) read `env`. Node's
 * process.env changes only libc's copies; once every variable has been replaced there, the block is
 * unreferenced, and a spare boots with ENV_ROOM_VAR so that the block is large enough. The unused
 * tail is zeroed. Returns false when `env` does not fit.
 */
export function rewriteProcEnviron(env: NodeJS.ProcessEnv): boolean {
  return overwriteOwnArea(
    50,
    Buffer.from(
      Object.entries(env)
        .map(([k, v]) => `${k}=${v ?? ''}\0`)
        .join('')
    )
  );
}

/** Replaces process.env with `env` (libc's environ follows: Node calls setenv/unsetenv). */
export function replaceEnv(env: NodeJS.ProcessEnv): void {
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, env);
}

/**
 * The claiming start's cgroups, rlimits, scheduling policy and nice value; returns what could not be
 * taken on. `scheduling` false: the caller copied the policy and nice value of `startPid` already
 * (both are per thread, and a cgroup move changes neither: copying them again cost ~1 ms a claim).
 */
export function adoptStartIdentity(startPid: number, scheduling = true): string[] {
  const problems: string[] = [];
  try {
    for (const line of joinCgroupsOf(startPid)) problems.push(`cgroup ${line}`);
  } catch (e) {
    problems.push(`cgroups: ${(e as Error).message}`);
  }
  try {
    for (const r of copyRlimitsOf(startPid)) problems.push(`rlimit ${r}`);
  } catch (e) {
    problems.push(`rlimits: ${(e as Error).message}`);
  }
  try {
    if (scheduling) copySchedulingOf(startPid);
  } catch (e) {
    problems.push(`scheduling: ${(e as Error).message}`);
  }
  return problems;
}
