// A daemon that began as a warm spare goes back to the spare pool when it leaves, instead of
// exiting while the next spare boots: no Node boot per container, and the code the next container
// runs is compiled already. It serves the next pod, so nothing of the last one may stay with it.
// What its leave does not release explicitly (serve.ts shutdown) is caught here: the process must
// hold exactly the descriptors it held as a spare before its first claim, have no child, and have
// no more process-level listeners than then. Anything else and it exits as any daemon does.
import * as fs from 'node:fs';
import { listOwnChildren } from '../sys/reaper';

/** The process's open descriptors and what each one is (its /proc/self/fd link). */
export function openFds(fdDir = '/proc/self/fd'): Map<number, string> {
  const out = new Map<number, string>();
  let names: string[] = [];
  try {
    names = fs.readdirSync(fdDir);
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      out.set(Number(name), fs.readlinkSync(`${fdDir}/${name}`));
    } catch {
      /* the readdir's own descriptor, closed by now */
    }
  }
  return out;
}

/** Process events whose listeners a daemon adds and must take off again before it returns. */
const WATCHED_EVENTS = ['SIGTERM', 'SIGINT', 'uncaughtException', 'unhandledRejection'] as const;

export interface SpareSnapshot {
  fds: Map<number, string>;
  listeners: Record<(typeof WATCHED_EVENTS)[number], number>;
}

/** What a spare holds before its first claim. */
export function spareSnapshot(fds = openFds()): SpareSnapshot {
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
