// Bounds on what clients can make the server hold: bytes of incomplete frames, bytes of replies the
// peer has not read, calls in flight. Per connection and in total, so one hostile or stuck client
// cannot grow the process without bound, and so that the others keep being served: past a total,
// the connection holding the most is the one refused or closed, never the newcomer with little.

export interface ResourceLimits {
  /**
   * Bytes of incomplete frames held across all connections (one connection holds at most one frame,
   * maxMessageSize). Past it, the connection holding the most is closed.
   */
  maxPartialFrameBytes: number;
  /** Unsent reply bytes of one connection past which it is not read until its peer reads (backpressure). */
  maxUnsentBytesPerConnection: number;
  /** Unsent reply bytes across all connections; past it, the connection with the most is closed. */
  maxUnsentBytes: number;
  /** Calls in flight on one connection; more are answered RESOURCE_EXHAUSTED. */
  maxPendingCallsPerConnection: number;
  /**
   * Calls in flight across all connections. Past it, a connection that holds at least its fair share
   * (this / connections) is refused; one below it is still served, so the total stays under twice this.
   */
  maxPendingCalls: number;
  /**
   * Frames of one connection handled per event-loop turn; the rest of a read waits for later turns
   * (and the connection is not read meanwhile), so other connections' requests are interleaved.
   */
  maxFramesPerTurn: number;
}

export const DEFAULT_RESOURCE_LIMITS: Readonly<ResourceLimits> = {
  maxPartialFrameBytes: 32 << 20,
  maxUnsentBytesPerConnection: 1 << 20,
  maxUnsentBytes: 64 << 20,
  maxPendingCallsPerConnection: 1024,
  maxPendingCalls: 4096,
  maxFramesPerTurn: 32,
};

/** Usage of one resource per holder, and its total. */
export class Tally<K> {
  private readonly used = new Map<K, number>();
  private sum = 0;

  get total(): number {
    return this.sum;
  }

  of(k: K): number {
    return this.used.get(k) ?? 0;
  }

  set(k: K, n: number): void {
    this.sum += n - this.of(k);
    if (n === 0) this.used.delete(k);
    else this.used.set(k, n);
  }

  /** The holder with the most, if any holds anything. */
  largest(): K | undefined {
    let best: K | undefined;
    let most = 0;
    for (const [k, n] of this.used)
      if (n > most) {
        most = n;
        best = k;
      }
    return best;
  }
}

/** What a connection must offer to be closed for holding too much. */
export interface Closable {
  closeForLimit(what: string): void;
}

/** The server's shared accounting; every connection reports to it. */
export class ServerLimits<C extends Closable> {
  readonly partial = new Tally<C>();
  readonly unsent = new Tally<C>();
  readonly calls = new Tally<C>();

  constructor(
    readonly limits: ResourceLimits,
    private readonly connectionCount: () => number
  ) {}

  /** Null when `conn` may start one more call, else why not (the RESOURCE_EXHAUSTED message). */
  refuseCall(conn: C): string | null {
    const mine = this.calls.of(conn);
    const { maxPendingCallsPerConnection: perConn, maxPendingCalls: max } = this.limits;
    if (mine >= perConn) return `ttrpc: too many pending calls on this connection (limit ${perConn})`;
    if (this.calls.total >= max && mine >= max / Math.max(1, this.connectionCount())) {
      return `ttrpc: too many pending calls (limit ${max} across all connections)`;
    }
    return null;
  }

  setCalls(conn: C, n: number): void {
    this.calls.set(conn, n);
  }

  setPartial(conn: C, bytes: number): void {
    this.partial.set(conn, bytes);
    this.enforce(this.partial, this.limits.maxPartialFrameBytes, 'bytes of incomplete frames');
  }

  setUnsent(conn: C, bytes: number): void {
    this.unsent.set(conn, bytes);
    this.enforce(this.unsent, this.limits.maxUnsentBytes, 'bytes of unread replies');
  }

  /** A closed connection holds nothing. */
  forget(conn: C): void {
    this.partial.set(conn, 0);
    this.unsent.set(conn, 0);
    this.calls.set(conn, 0);
  }

  private enforce(t: Tally<C>, max: number, what: string): void {
    while (t.total > max) {
      const worst = t.largest();
      if (!worst) return;
      t.set(worst, 0); // closing is synchronous in effect; never pick the same one twice
      worst.closeForLimit(`${what} above ${max} across all connections, this one held the most`);
    }
  }
}
