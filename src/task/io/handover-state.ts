// The shapes a process's IO hands to the next shim process of an in-place upgrade (src/upgrade/):
// plain JSON, part of the versioned upgrade state (change them only together with STATE_VERSION).
// No imports: io/types.ts and io/handover.ts both use them.

/** Where a copy writes: a pipe or FIFO (net.Socket), a file (append), or nowhere. */
export type DestinationState = { kind: 'socket'; fd: number } | { kind: 'file'; fd: number } | { kind: 'discard' };

export interface CopyState {
  name: string;
  /** The source ended before the upgrade: nothing of this copy is left. */
  done: boolean;
  srcFd: number;
  dst: DestinationState;
  /** Read from the source, never written (base64). */
  pending: string;
  /** The destination had failed: what is read is dropped. */
  dropping: boolean;
  /** An extra FIFO reader held open by the shim, closed after the copy (output FIFOs). */
  keepReaderFd?: number;
}

export interface PipeIoState {
  kind: 'pipe';
  copies: CopyState[];
  stdin: (CopyState & { keepAliveFd?: number }) | null;
  loggerPid?: number;
}

export interface TerminalIoState {
  kind: 'terminal';
  masterFd: number;
  /** The console copy (master -> stdout); its srcFd is the duplicate of the master the socket owns. */
  console: CopyState;
  stdin: (CopyState & { keepAliveFd?: number }) | null;
  loggerPid?: number;
}

export type IoState = PipeIoState | TerminalIoState;

/** The hand-over controls of one ProcessIO (all its copies at once). */
export interface IoHandover {
  /** Stop reading every source now. */
  pause(): void;
  /** Undo pause() (the upgrade was given up before anything was detached). */
  resume(): void;
  /** Every destination took all it was given. */
  flushed(): boolean;
  /** Leave every fd open for the next process; the IO object is dead afterwards. */
  detach(): IoState;
  /**
   * What detach() would give now, without detaching anything and without the bytes read but not
   * written (`pending` is empty): the upgrade probe's dry run of the restore (src/upgrade/probe.ts).
   */
  view(): IoState;
}
