// What "no leak" means for a leak run, shared by the CI test and the standalone stress.
import type { LeakReport } from './leak-scenario';

export const FD_SLACK = 2;
export const RSS_GROWTH_LIMIT = 30 * 1048576;
export const OUTBOX_LIMIT = 512 * 1024;

export function leakProblems(r: LeakReport): string[] {
  const p: string[] = [];
  if (r.end.fds > r.baseline.fds + FD_SLACK)
    p.push(
      `fds grew from ${r.baseline.fds} to ${r.end.fds}: ${JSON.stringify(r.end.fdKinds)} (warm-up ${JSON.stringify(r.baseline.fdKinds)})`
    );
  if (r.end.rss - r.baseline.rss > RSS_GROWTH_LIMIT)
    p.push(`RSS grew by ${((r.end.rss - r.baseline.rss) / 1048576).toFixed(1)} MiB after warm-up`);
  if (r.end.children > r.start.children) p.push(`children ${r.start.children} -> ${r.end.children}`);
  if (r.zombies) p.push(`${r.zombies} zombies`);
  if (r.fifoFdsLeft) p.push(`${r.fifoFdsLeft} fifo fds still open`);
  if (r.execPidFilesLeft.length) p.push(`exec pid files left: ${r.execPidFilesLeft.slice(0, 5).join(' ')}`);
  if (r.mountsLeft.length) p.push(`mounts left: ${r.mountsLeft.join(' ')}`);
  if (r.outboxBytes > OUTBOX_LIMIT) p.push(`event outbox ${r.outboxBytes} bytes: not compacted`);
  if (r.stateFiles.some((f) => !f.endsWith('.outbox') && !f.endsWith('.pid')))
    p.push(`unexpected state files: ${r.stateFiles.join(' ')}`);
  if (r.otherShims) p.push(`${r.otherShims} other shim(s) started`);
  return p;
}
