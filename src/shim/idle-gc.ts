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

/** A collection; `compact` asks for the old generation to be compacted whole (see compactingGc). */
type GcFn = (compact?: boolean) => void;
/** V8's gc() of --expose-gc: a full collection, or with { type: 'minor' } a scavenge of the young generation. */
type ExposedGc = (options?: { type: 'minor' | 'major' }) => void;

const exposedGc = (): ExposedGc | undefined => (globalThis as { gc?: ExposedGc }).gc;

/**
 * How long after a collection the resident-set trim waits: V8 finishes it (sweeping, unmapping) on
 * its background threads, which run V8's code again; a trim right after gc() returned saw ~6 MiB of
 * the node binary's code faulted back in at once.
 */
export const TRIM_AFTER_GC_MS = 300;

/**
 * A full collection that compacts the whole old generation. V8 picks the pages to evacuate from
 * the live bytes that the previous collection's sweeping counted, so a plain gc() after a busy
 * period frees the dead objects but keeps their pages: a per-node daemon 3 s after its 50th and
 * last container went held 9.0 MiB of old space for 5.9 MiB live, and gave the rest back only at
 * the follow-up 3 s later (7.2 MiB). --compact-on-every-full-gc evacuates every page that has free
 * space in this one collection; it is set for the call only (node:v8 is loaded on first use).
 */
export function compactingGc(gc: ExposedGc): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: a shim that never compacts does not load it
  const v8: typeof import('node:v8') = require('node:v8');
  v8.setFlagsFromString('--compact-on-every-full-gc');
  try {
    gc();
  } finally {
    v8.setFlagsFromString('--no-compact-on-every-full-gc');
  }
}

/**
 * One full collection (compacting when `compact`, see compactingGc), then (unless configured off)
 * the resident-set trim; a no-op without --expose-gc.
 */
export function collectAndTrim(trim: boolean, compact = false): void {
  const gc = exposedGc();
  if (!gc) return;
  if (compact) compactingGc(gc);
  else gc();
  if (trim) setTimeout(() => trimResidentSet(() => gc({ type: 'minor' })), TRIM_AFTER_GC_MS).unref();
}

/** The daemon's collection: collectAndTrim, or nothing without --expose-gc. */
export function daemonCollection(trim: boolean): GcFn | undefined {
  return exposedGc() ? (compact?: boolean) => collectAndTrim(trim, compact) : undefined;
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
  private compactNext = false;
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

  /**
   * The shim has just given up much of what it held (a per-node daemon's last container went): the
   * next collection compacts, so that the freed pages go back then rather than at a follow-up.
   */
  released(): void {
    if (!this.gc) return;
    this.compactNext = true;
    this.activity();
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
    const compact = this.compactNext;
    this.compactNext = false;
    this.gc!(compact);
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
