// Full garbage collection once the shim goes quiet. After a burst of calls V8 keeps its heap at the
// high-water mark until the next major collection, and an idle shim never allocates enough to get
// one: RSS stays tens of MiB above what is live. One collection after IDLE_MS without a call hands
// that memory back, followed by a trim of the resident set (trim.ts). It needs the daemon's
// --expose-gc flag; without it this does nothing.
import { trimResidentSet } from './trim';

export const IDLE_GC_MS = 1500;
/**
 * Follow-up collections and trims this long apart after the first: V8 sweeps and unmaps the pages a
 * collection freed on background threads, after gc() returned, so the first trim comes too early.
 * Measured with test/stress/hostile-clients.ts: after 5000 unread replies RSS stayed ~30% up until
 * a second collection ran, and once (CI, 100k unread replies) 25% up after one follow-up.
 */
export const FOLLOW_UP_GC_MS = 3000;
/** At most this many follow-ups; after the first, one more only while the last gave back this much. */
export const MAX_FOLLOW_UPS = 3;
export const FOLLOW_UP_MIN_GAIN_BYTES = 1 << 20;
/** Collections caused only by background work (metrics scrapes) run at most this often. */
export const BACKGROUND_GC_MIN_MS = 10_000;

type GcFn = () => void;
/** V8's gc() of --expose-gc: a full collection, or with { type: 'minor' } a scavenge of the young generation. */
type ExposedGc = (options?: { type: 'minor' | 'major' }) => void;

const exposedGc = (): ExposedGc | undefined => (globalThis as { gc?: ExposedGc }).gc;

/**
 * How long after a collection the resident-set trim waits: V8 finishes it (sweeping, unmapping) on
 * its background threads, which run V8's code again; a trim right after gc() returned saw ~6 MiB of
 * the node binary's code faulted back in at once.
 */
export const TRIM_AFTER_GC_MS = 300;

/** One full collection, then (unless configured off) the resident-set trim; a no-op without --expose-gc. */
export function collectAndTrim(trim: boolean): void {
  const gc = exposedGc();
  if (!gc) return;
  gc();
  if (trim) setTimeout(() => trimResidentSet(() => gc({ type: 'minor' })), TRIM_AFTER_GC_MS).unref();
}

/** The daemon's collection: collectAndTrim, or nothing without --expose-gc. */
export function daemonCollection(trim: boolean): GcFn | undefined {
  return exposedGc() ? () => collectAndTrim(trim) : undefined;
}

export class IdleCollector {
  private timer: NodeJS.Timeout | null = null;
  private lastActivity = 0;
  private dirty = false;
  private followUpsLeft = 0;
  private rssAtLastGc = 0;
  private waitingForFollowUp = false;
  private taskDirty = false;
  private lastGc = 0;
  /** Full collections run so far (exported as a metric). */
  collections = 0;

  constructor(
    private readonly idleMs = IDLE_GC_MS,
    private readonly gc: GcFn | undefined = daemonCollection(true),
    private readonly backgroundMinMs = BACKGROUND_GC_MIN_MS,
    private readonly rss: () => number = () => process.memoryUsage.rss()
  ) {}

  get enabled(): boolean {
    return typeof this.gc === 'function';
  }

  /** Something happened that allocates: schedule a collection for when things go quiet. */
  activity(): void {
    if (!this.gc) return;
    this.lastActivity = Date.now();
    this.dirty = true;
    if (this.timer && this.waitingForFollowUp) this.close(); // new activity: the normal idle wait instead
    this.taskDirty = true;
    if (!this.timer) this.arm(this.idleMs);
  }

  /**
   * Work that allocates but is not a Task call (a metrics scrape): it gets a collection after it,
   * but never postpones one (a scrape every second would otherwise keep an idle shim from ever
   * trimming), and scrapes alone cause at most one collection per backgroundMinMs.
   */
  background(): void {
    if (!this.gc) return;
    this.dirty = true;
    if (!this.timer) this.arm(this.idleMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(ms: number, followUp = false): void {
    this.waitingForFollowUp = followUp;
    this.timer = setTimeout(() => this.fire(), ms);
    this.timer.unref();
  }

  private fire(): void {
    const followingUp = this.waitingForFollowUp;
    this.timer = null;
    const quiet = Date.now() - this.lastActivity;
    if (quiet < this.idleMs) return this.arm(this.idleMs - quiet);
    if (!this.dirty && !followingUp) return;
    // Background work alone (scrapes) gets at most one collection per backgroundMinMs.
    const wait = this.lastGc + this.backgroundMinMs - Date.now();
    if (this.dirty && !this.taskDirty && !followingUp && wait > 0) return this.arm(wait);
    const forTask = this.dirty && this.taskDirty;
    const rssBefore = this.rssAtLastGc;
    this.dirty = false;
    this.taskDirty = false;
    this.gc!();
    this.lastGc = Date.now();
    this.collections++;
    this.rssAtLastGc = this.rss();
    // After a collection for Task work, follow-ups while they still hand memory back. Scrapes alone
    // allocate little: their (rate-limited) collection needs none.
    if (forTask) this.followUpsLeft = MAX_FOLLOW_UPS;
    else if (followingUp && rssBefore - this.rssAtLastGc >= FOLLOW_UP_MIN_GAIN_BYTES) this.followUpsLeft--;
    else this.followUpsLeft = 0;
    if (this.followUpsLeft > 0) this.arm(FOLLOW_UP_GC_MS, true);
  }
}
