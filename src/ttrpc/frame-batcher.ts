// Fairness between connections: the frames of one read are handed on a bounded batch per event-loop
// turn, the rest on later turns (setImmediate), so a peer that pipelines a thousand requests in one
// 64 KiB read cannot hold the loop while other connections' requests wait. Order is kept. The owner
// stops reading while a backlog exists (onBacklog), so the backlog never holds more than one read.
import type { FrameHeader, FrameSink } from './frame';

/** A decoded frame waiting for its turn; data null = an oversized frame to report. */
export interface Pending {
  header: FrameHeader;
  data: Buffer | null;
}

export class FrameBatcher implements FrameSink {
  private queue: (Pending | undefined)[] = [];
  private head = 0;
  private next: NodeJS.Immediate | null = null;
  private inBacklog = false;
  private stopped = false;
  /** Upgrade quiesce: nothing is handed on while held (see Channel.hold). */
  private held = false;

  /**
   * @param perTurn frames handed to `sink` per turn of the event loop (Infinity: all at once)
   * @param onBacklog called with true when frames are left for a later turn, false once all are handed on
   */
  private readonly perTurn: number;

  constructor(
    private readonly sink: FrameSink,
    perTurn: number,
    private readonly onBacklog: (backlog: boolean) => void
  ) {
    this.perTurn = perTurn >= 1 ? perTurn : 1; // 0 or NaN would never hand anything on
  }

  /** Frames decoded but not handed on yet. */
  get backlog(): number {
    return this.queue.length - this.head;
  }

  frame(header: FrameHeader, data: Buffer): void {
    this.queue.push({ header, data });
  }

  oversize(header: FrameHeader): void {
    this.queue.push({ header, data: null });
  }

  /** Stops (true) or resumes (false) handing frames on; a resume hands on what waited. */
  hold(on: boolean): void {
    this.held = on;
    if (!on && this.backlog > 0) this.flush();
  }

  /** Takes the frames not handed on yet, in order (the batcher is empty afterwards). */
  takeBacklog(): Pending[] {
    const out = this.queue.slice(this.head) as Pending[];
    if (this.next) clearImmediate(this.next);
    this.next = null;
    this.queue = [];
    this.head = 0;
    return out;
  }

  /** Hand on one batch now (after a read); what is left goes on later turns. */
  flush(): void {
    if (this.next || this.stopped || this.held) return; // a later turn is already scheduled and keeps the order
    this.deliver();
  }

  /** Drop whatever is left (the connection closed). */
  stop(): void {
    this.stopped = true;
    if (this.next) clearImmediate(this.next);
    this.next = null;
    this.queue = [];
    this.head = 0;
  }

  private readonly deliver = (): void => {
    this.next = null;
    if (this.held) return;
    for (let n = 0; n < this.perTurn && this.head < this.queue.length && !this.stopped; n++) {
      const p = this.queue[this.head]!;
      this.queue[this.head++] = undefined; // let its buffer go as soon as it is handled
      if (p.data === null) this.sink.oversize(p.header);
      else this.sink.frame(p.header, p.data);
    }
    if (this.stopped) return;
    if (this.head < this.queue.length) {
      this.next = setImmediate(this.deliver);
      this.setBacklog(true);
    } else {
      this.queue = [];
      this.head = 0;
      this.setBacklog(false);
    }
  };

  private setBacklog(backlog: boolean): void {
    if (backlog === this.inBacklog) return;
    this.inBacklog = backlog;
    this.onBacklog(backlog);
  }
}
