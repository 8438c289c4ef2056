// Full garbage collection once the shim goes quiet. After a burst of calls V8 keeps its heap at the
// high-water mark until the next major collection, and an idle shim never allocates enough to get
// one: RSS stays tens of MiB above what is live. One collection after IDLE_MS without a call hands
// that memory back, followed by a trim of the resident set (trim.ts). It needs the daemon's
// --expose-gc flag; without it this does nothing.
//
// Only a quiet period after a real change in memory gets that cleanup. A collection, its follow-ups
// and the trim cost ~70-80 ms of shim CPU, and the next call faults the dropped code back in
// (~3 ms): after a single State call, the Go shim spent 0-7 ms in the next 12 s, tsshim 71-83 ms
// (bench/results/2026-12-03-quiet.md). A shim that the kubelet asks for Stats every 10 s paid that
// every time, for nothing: such a call leaves ~100 KiB of heap and the same code pages each time.
import type { Logger } from '../sys/logger';
import { residentKb, trimResidentSet } from './trim';

export const IDLE_GC_MS = 1500;
/**
 * The timer is armed at the first call of a burst and not moved by the calls after it: a Node timer
 * moved later still wakes the process when it was first due (libuv keeps that time). When it
 * fires that close to a quiet period's end, the look is taken then rather than after another
 * wake-up: an exec's calls span ~0.1-0.3 s, and that second wake-up cost ~0.5-0.8 ms of CPU.
 */
export const IDLE_SLACK_MS = 400;
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

/**
 * A collection; `compact` asks for the old generation to be compacted whole (see compactingGc);
 * `done` runs once the collection is over and before its trim drops any page (see collectAndTrim),
 * with the resident kB of files that the trim then drops (0 without a trim).
 */
type GcFn = (compact?: boolean, done?: (droppingFileKb: number) => void) => void;

/**
 * What a quiet period is measured by: what V8 holds (its heap in use and the memory of Buffers and
 * ArrayBuffers, which a collection frees as well), and the anonymous and file pages resident.
 */
export interface Footprint {
  heapUsedBytes: number;
  anonResidentKb: number;
  fileResidentKb: number;
}

export function processFootprint(): Footprint {
  const m = process.memoryUsage();
  const r = residentKb();
  return { heapUsedBytes: m.heapUsed + m.external, anonResidentKb: r.anonKb, fileResidentKb: r.fileKb };
}

/**
 * A quiet period gets a collection only when, since the last cleanup, what V8 holds changed by
 * this much either way, or the anonymous resident memory grew by this much. Growth is garbage that
 * a collection and malloc_trim hand back; a fall means V8 freed memory on its own, or the last
 * cleanup ran in the middle of a burst (a hostile client's partial frames held then): the pages
 * stay resident until a cleanup gives them back (hostile-clients e2e: 48 MiB instead of 21)...
 */
export const HEAP_CHANGE_MIN_BYTES = 2 << 20;
/**
 * ... or this much file-backed memory came back into the resident set (what a trim would drop),
 * counted from what the trim left right after its drop (~1-2 MiB). A call faults back the code it
 * runs, much the same each time: after a trim, one Stats ~11 MiB, a few more calls 16-18 MiB
 * (debug log of a shim with a Stats every 10 s, bench/results/2026-12-03-mem3.md), a collection's
 * own code ~6 MiB. Below that, a trim would only make the next calls fault the same pages back in.
 * (Counted from a footprint read after the drop, which faulted ~4.5 MiB back itself, this was 16.)
 */
export const FILE_GROWTH_MIN_KB = 22 << 10;
/**
 * A query (State, Stats, Pids, Connect: src/task/rpc.ts) counts as activity only once in this many.
 * One leaves ~100 KiB of heap and faults back the code it runs; the look at the footprint that the
 * quiet period after it got cost the shim more than the call's own work: ~1.2-1.5 ms of CPU 1.5 s
 * after each of a kubelet's Stats, which come every 10 s (the Go shim: none). Queries alone still
 * get looked at (and cleaned up after when they changed enough), once in a while.
 */
export const QUERIES_PER_ACTIVITY = 16;
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
 * the resident-set trim; a no-op without --expose-gc. `done` runs inside the trim, right before it
 * drops the pages of files (see trimResidentSet): what runs after the drop faults its code back in,
 * and the footprint that `done` reads there kept ~3.5 MiB of node's code resident in an idle
 * per-node daemon when it ran after the trim.
 * Returns what calls the trim off while it waits (`done` then never runs): see runSpare.
 */
export function collectAndTrim(trim: boolean, compact = false, done?: (droppingFileKb: number) => void): () => void {
  const gc = exposedGc();
  if (!gc) return () => {};
  if (compact) compactingGc(gc);
  else gc();
  if (!trim) {
    done?.(0);
    return () => {};
  }
  const pending = setTimeout(() => {
    let reported = false;
    trimResidentSet(
      () => gc({ type: 'minor' }),
      undefined,
      (kb) => {
        reported = true;
        done?.(kb);
      }
    );
    if (!reported) done?.(0); // nothing to trim with (no /proc, no koffi)
  }, TRIM_AFTER_GC_MS).unref();
  return () => clearTimeout(pending);
}

/** The daemon's collection: collectAndTrim, or nothing without --expose-gc. */
export function daemonCollection(trim: boolean): GcFn | undefined {
  return exposedGc()
    ? (compact?: boolean, done?: (droppingFileKb: number) => void) => void collectAndTrim(trim, compact, done)
    : undefined;
}

export interface IdleCollectorOptions {
  /** Collections caused only by background work run at most this often (BACKGROUND_GC_MIN_MS). */
  backgroundMinMs?: number;
  rss?: () => number;
  /** Without it every quiet period gets a collection; with it, only one after a change (see above). */
  footprint?: () => Footprint;
  /**
   * The first collection compacts (see compactingGc). A shim's first quiet period follows its boot
   * and its first container's Create and Start: the collection frees their garbage but keeps the
   * pages it was on, and the follow-ups compact little of it. Compacting then costs ~30 ms of CPU
   * once (~40 ms against ~10 for a plain collection of a serving shim's heap) and gives back
   * ~0.5 MiB of old space for the life of the shim (bench/results/2026-12-03-mem3.md).
   */
  compactFirst?: boolean;
  log?: Logger;
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
  private queries = 0;
  /** The footprint once the last cleanup was over; null before the first (which always runs). */
  private afterCleanup: Footprint | null = null;
  private readonly backgroundMinMs: number;
  private readonly rss: () => number;
  /** Full collections run so far (exported as a metric). */
  collections = 0;
  /** Quiet periods that needed no collection (nothing changed much since the last one). */
  skipped = 0;

  constructor(
    private readonly idleMs = IDLE_GC_MS,
    private readonly gc: GcFn | undefined = daemonCollection(true),
    private readonly opts: IdleCollectorOptions = {}
  ) {
    this.backgroundMinMs = opts.backgroundMinMs ?? BACKGROUND_GC_MIN_MS;
    this.compactNext = opts.compactFirst === true;
    this.rss = opts.rss ?? (() => process.memoryUsage.rss());
  }

  get enabled(): boolean {
    return typeof this.gc === 'function';
  }

  /** Something happened that allocates: schedule a collection for when things go quiet. */
  activity(): void {
    if (!this.gc) return;
    this.lastActivity = Date.now();
    this.queries = 0; // the look after this covers the queries before it
    this.dirty = true;
    if (this.timer && this.waitingForFollowUp) this.close(); // new activity: the normal idle wait instead
    this.taskDirty = true;
    if (!this.timer) this.arm(this.idleMs);
  }

  /** A query answered (see QUERIES_PER_ACTIVITY): activity once in that many, else nothing to wake up for. */
  query(): void {
    if (!this.gc || ++this.queries < QUERIES_PER_ACTIVITY) return;
    this.activity();
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
    if (quiet < this.idleMs - Math.min(IDLE_SLACK_MS, this.idleMs / 2)) return this.arm(this.idleMs - quiet);
    if (!this.dirty && !followingUp) return;
    // Background work alone (scrapes) gets at most one collection per backgroundMinMs.
    const wait = this.lastGc + this.backgroundMinMs - Date.now();
    if (this.dirty && !this.taskDirty && !followingUp && wait > 0) return this.arm(wait);
    const forTask = this.dirty && this.taskDirty;
    const rssBefore = this.rssAtLastGc;
    this.dirty = false;
    this.taskDirty = false;
    const compact = this.compactNext;
    // A follow-up, or a cleanup whose follow-ups a call cut short: that one is not over (V8 gives
    // the pages back later) and goes on where it stopped, unless the calls since changed enough for
    // a cleanup of their own. Started afresh every time, a chain that a call every ~10 s (a
    // kubelet's Stats) cut short began again after each call: ~30-40 ms of CPU every period.
    let continuing = followingUp;
    if (!followingUp && !compact && !this.changedSinceCleanup()) {
      if (this.followUpsLeft === 0) {
        this.skipped++;
        return;
      }
      continuing = true;
    }
    this.compactNext = false;
    const measure = this.opts.footprint;
    // What the cleanup leaves, read before the trim drops the pages of files (less those pages).
    const cleaned = (droppingFileKb = 0) => {
      const f = measure!();
      this.afterCleanup = { ...f, fileResidentKb: Math.max(0, f.fileResidentKb - droppingFileKb) };
    };
    this.gc!(compact, measure && cleaned);
    this.lastGc = Date.now();
    this.collections++;
    this.rssAtLastGc = this.rss();
    // After a collection for Task work, follow-ups while they still hand memory back. Scrapes alone
    // allocate little: their (rate-limited) collection needs none.
    if (forTask && !continuing) this.followUpsLeft = MAX_FOLLOW_UPS;
    else if (continuing && rssBefore - this.rssAtLastGc >= FOLLOW_UP_MIN_GAIN_BYTES) this.followUpsLeft--;
    else this.followUpsLeft = 0;
    if (this.followUpsLeft > 0) this.arm(FOLLOW_UP_GC_MS, true);
  }

  /** Whether the heap or the resident memory changed enough since the last cleanup to be worth one. */
  private changedSinceCleanup(): boolean {
    const base = this.afterCleanup;
    if (!base || !this.opts.footprint) return true;
    const now = this.opts.footprint();
    const heapGrowth = now.heapUsedBytes - base.heapUsedBytes;
    const anonGrowthKb = now.anonResidentKb - base.anonResidentKb;
    const fileGrowthKb = now.fileResidentKb - base.fileResidentKb;
    const changed =
      Math.abs(heapGrowth) >= HEAP_CHANGE_MIN_BYTES ||
      anonGrowthKb * 1024 >= HEAP_CHANGE_MIN_BYTES ||
      fileGrowthKb >= FILE_GROWTH_MIN_KB;
    // Only a cleanup gets a line: a skipped quiet period (a kubelet's Stats every 10 s) is counted
    // (`skipped`), and its line would cost a fifo write and a wake-up of containerd's log reader.
    if (changed)
      this.opts.log?.debug('idle: changed since the last cleanup', {
        heap_growth_kb: Math.round(heapGrowth / 1024),
        anon_growth_kb: anonGrowthKb,
        file_growth_kb: fileGrowthKb,
      });
    return changed;
  }
}
