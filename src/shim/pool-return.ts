// A daemon that began as a warm spare goes back to the spare pool when it leaves, instead of
// exiting while the next spare boots: no Node boot per container, and the code the next container
// runs is compiled already. It serves the next pod, so nothing of the last one may stay with it.
// What its leave does not release explicitly (serve.ts shutdown) is caught here: the process must
// hold exactly the descriptors it held as a spare before its first claim, have no child, and have
// no more process-level listeners than then. Anything else and it exits as any daemon does.
import { ownFds } from '../sys/proc-fds';
import { listOwnChildren } from '../sys/reaper';

/** Process events whose listeners a daemon adds and must take off again before it returns. */
const WATCHED_EVENTS = ['SIGTERM', 'SIGINT', 'uncaughtException', 'unhandledRejection'] as const;

export interface SpareSnapshot {
  fds: Map<number, string>;
  listeners: Record<(typeof WATCHED_EVENTS)[number], number>;
}

/**
 * How often one process goes back to the pool. Its anonymous memory grew ~100 KiB per return at
 * first and ~20 KiB later (30 returns, 12.3 -> 13.8 MiB after each cleanup): the bound keeps any
 * slow growth from adding up over a node's life.
 */
export const MAX_POOL_RETURNS = 100;

/** What decides whether a leaving daemon may go back to the pool, besides a clean process. */
export interface ReturnConditions {
  /** Times this process went back already. */
  returns: number;
  /** settleDaemon moved it into its container's ShimCgroup: a pod's cgroup, which must be able to go. */
  inShimCgroup: boolean;
  /** tsshim was rebuilt or installed anew under it: the next spare boots from the new install. */
  installChanged: boolean;
}

/** Why this daemon may not go back to the pool ('' when it may): the conditions first, then notPoolClean. */
export function poolReturnRefusal(c: ReturnConditions, clean: () => string): string {
  if (c.returns >= MAX_POOL_RETURNS) return `went back ${c.returns} times already`;
  if (c.inShimCgroup) return "it was moved into its container's ShimCgroup";
  if (c.installChanged) return 'tsshim was installed anew';
  return clean();
}

/** What a spare holds before its first claim. */
export function spareSnapshot(fds = ownFds()): SpareSnapshot {
  const listeners = Object.fromEntries(WATCHED_EVENTS.map((e) => [e, process.listenerCount(e)]));
  return { fds, listeners: listeners as SpareSnapshot['listeners'] };
}

/**
 * Why this process may not go back to the pool ('' when it may): compared with `before` (taken as
 * a spare), ignoring the descriptors in `except` (the daemon's log, closed right after).
 */
export function notPoolClean(
  before: SpareSnapshot,
  except: readonly number[] = [],
  now: SpareSnapshot = spareSnapshot(),
  children: () => number[] = listOwnChildren
): string {
  for (const [fd, target] of now.fds) {
    if (except.includes(fd)) continue;
    if (before.fds.get(fd) !== target) return `descriptor ${fd} (${target}) was not open as a spare`;
  }
  for (const [fd, target] of before.fds) {
    if (now.fds.get(fd) !== target) return `descriptor ${fd} (${target}) of the spare is gone`;
  }
  const kids = children();
  if (kids.length) return `child processes left: ${kids.join(' ')}`;
  for (const e of WATCHED_EVENTS) {
    if (now.listeners[e] !== before.listeners[e])
      return `${e} listeners: ${now.listeners[e]}, ${before.listeners[e]} as a spare`;
  }
  return '';
}
