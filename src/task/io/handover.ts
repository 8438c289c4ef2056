// What a process's IO hands to the next shim process of an in-place upgrade (src/upgrade/): the
// fds of every copy (the new process wraps them again) and the bytes a copy read but did not write.
// Plain JSON, part of the versioned upgrade state: change it only together with STATE_VERSION.
import * as fs from 'node:fs';
import type { Writable } from 'node:stream';
import type * as net from 'node:net';
import { processExists, kill } from '../../sys/libc';
import { socketOnFd } from './fds';
import type { PumpControl } from './pump';
import type { CopyState, DestinationState, IoHandover, IoState } from './handover-state';

export type { DestinationState, CopyState, PipeIoState, TerminalIoState, IoState, IoHandover } from './handover-state';

export function fdOfStream(s: net.Socket | fs.WriteStream | Writable): number {
  const ws = s as unknown as { fd?: unknown; _handle?: { fd?: number } };
  if (typeof ws.fd === 'number') return ws.fd;
  const fd = ws._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('stream has no fd to hand over');
  return fd;
}

/** The fds of an IoState, for clearing close-on-exec before the exec. */
export function ioFds(s: IoState): number[] {
  const out: number[] = [];
  const copy = (c: (CopyState & { keepAliveFd?: number }) | null) => {
    if (!c || c.done) return;
    out.push(c.srcFd);
    if (c.dst.kind !== 'discard') out.push(c.dst.fd);
    if (c.keepReaderFd !== undefined) out.push(c.keepReaderFd);
    if (c.keepAliveFd !== undefined) out.push(c.keepAliveFd);
  };
  if (s.kind === 'pipe') s.copies.forEach(copy);
  else {
    if (s.masterFd >= 0) out.push(s.masterFd);
    copy(s.console);
  }
  copy(s.stdin);
  return [...new Set(out)];
}

/**
 * Builds a CopyState from a running pump (after its pause and flush); `view`: the same without
 * detaching the pump (no pending bytes), for a dry run of the restore.
 */
export function detachCopy(
  name: string,
  control: Partial<PumpControl>,
  srcFd: number,
  dst: DestinationState,
  extra: { keepReaderFd?: number } = {},
  view = false
): CopyState {
  if (!control.detach || control.finished?.())
    return { name, done: true, srcFd: -1, dst: { kind: 'discard' }, pending: '', dropping: false };
  const pending = view ? Buffer.alloc(0) : control.detach();
  return {
    name,
    done: false,
    srcFd,
    dst,
    pending: pending.toString('base64'),
    dropping: !!control.dropping?.(),
    ...extra,
  };
}

/**
 * Runs fn once the synchronous restore of an in-place upgrade is over (the next tick): the bytes a
 * copy read but had not written go out only then. A restore that throws or exits before falls back
 * to the previous build with the same state (src/upgrade/restore.ts), and that build writes them:
 * written here first, they would arrive twice. The copy's own reads come from the event loop, later.
 */
export function afterRestore(fn: () => void): void {
  process.nextTick(fn);
}

/** A destination stream again, on its handed-over fd. */
export function destinationStream(d: DestinationState): Writable | null {
  if (d.kind === 'socket') return socketOnFd(d.fd, 'write');
  if (d.kind === 'file') return fs.createWriteStream('', { fd: d.fd, autoClose: true });
  return null;
}

/** pause/resume/flushed of a set of pump controls; `state(view)` is detach() (view false) and view(). */
export function pumpsHandover(controls: Partial<PumpControl>[], state: (view: boolean) => IoState): IoHandover {
  return {
    pause: () => {
      for (const c of controls) c.pause?.();
    },
    resume: () => {
      for (const c of controls) c.resume?.();
    },
    flushed: () => controls.every((c) => !c.flushed || c.finished?.() || c.flushed()),
    detach: () => state(false),
    view: () => state(true),
  };
}

/**
 * A logging binary started by the previous process: not our libuv child any more, so it is stopped
 * by pid (SIGTERM, then SIGKILL after the timeout); the reaper collects its exit.
 */
export class AdoptedLogger {
  constructor(readonly pid: number) {}
  async stop(timeoutMs = 12_000): Promise<void> {
    try {
      kill(this.pid, 15);
    } catch {
      return; // already gone: nothing left to stop
    }
    const end = Date.now() + timeoutMs;
    while (processExists(this.pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    if (processExists(this.pid)) {
      try {
        kill(this.pid, 9);
      } catch {
        /* gone */
      }
    }
  }
}
