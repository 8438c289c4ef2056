// OOM monitoring for every container of the shim, cgroup v1 or v2, behind one small interface.
import type { CgroupHandle } from './discovery';
import type { EventfdMode } from './eventfd-reader';
import { V1OomRegistration, type V1OomHandover } from './oom-v1';
import { V2OomWatch, type V2OomHandover } from './oom-v2';

/** A container's watch as it crosses an in-place upgrade (the kind follows its cgroup's version). */
export type OomWatchHandover = V1OomHandover | V2OomHandover;

export type OomLog = (
  level: 'debug' | 'info' | 'warn' | 'error',
  msg: string,
  fields?: Record<string, unknown>
) => void;

export interface OomWatcherOptions {
  log?: OomLog;
  /** Tests: force the eventfd polling fallback. */
  eventfdMode?: EventfdMode;
}

interface Watch {
  close(): void;
  flush(): Promise<void>;
  settled(): boolean;
  handover(): OomWatchHandover;
}

export class OomWatcher {
  private readonly watches = new Map<string, Watch>();
  /** The latest add() per id; remove() clears it so an add still registering is dropped. */
  private readonly latestAdd = new Map<string, symbol>();
  private closed = false;

  constructor(
    private readonly onOom: (containerId: string) => void,
    private readonly opts: OomWatcherOptions = {}
  ) {}

  /**
   * Starts watching a container's cgroup. Rejects when registration fails (e.g. no memory
   * controller); the caller logs it, as the Go shim does. Re-adding an id replaces its watch.
   * `handedOver` (what handover() gave the previous program) goes on from where that one stopped;
   * the watch is then in place before add() returns its promise.
   */
  async add(containerId: string, h: CgroupHandle, handedOver?: OomWatchHandover): Promise<void> {
    if (this.closed) throw new Error('OOM watcher is closed');
    const token = Symbol(containerId);
    this.latestAdd.set(containerId, token);
    const fire = (oomKills?: bigint): void => {
      if (this.watches.get(containerId) !== watch) return;
      this.opts.log?.('debug', 'oom: reporting an OOM', { id: containerId, oomKills: oomKills?.toString() });
      try {
        this.onOom(containerId);
      } catch (err) {
        this.opts.log?.('error', 'oom: event handler failed', { id: containerId, error: (err as Error).message });
      }
    };
    const forget = (err?: Error): void => {
      if (this.watches.get(containerId) !== watch) return;
      this.watches.delete(containerId);
      if (err) this.opts.log?.('warn', 'oom: stopped watching cgroup', { id: containerId, error: err.message });
      else this.opts.log?.('debug', 'oom: cgroup gone, stopped watching', { id: containerId });
    };
    let watch: Watch;
    try {
      if (h.version === 2) {
        watch = V2OomWatch.start(h.dir, fire, forget, handedOver as V2OomHandover | undefined);
      } else if (handedOver) {
        watch = V1OomRegistration.adopt(
          handedOver as V1OomHandover,
          h.paths,
          fire,
          () => forget(),
          this.opts.eventfdMode
        );
      } else {
        watch = await V1OomRegistration.register(h.paths, fire, () => forget(), this.opts.eventfdMode);
      }
    } catch (err) {
      if (this.latestAdd.get(containerId) === token) this.latestAdd.delete(containerId);
      throw err;
    }
    if (this.closed || this.latestAdd.get(containerId) !== token) {
      watch.close(); // removed (or re-added) while registering
      return;
    }
    this.latestAdd.delete(containerId);
    this.watches.get(containerId)?.close();
    this.watches.set(containerId, watch);
  }

  has(containerId: string): boolean {
    return this.watches.has(containerId);
  }

  /**
   * Reports any OOM that happened but was not yet delivered (call before publishing the
   * container's exit, so /tasks/oom precedes /tasks/exit as with the Go shim's timing).
   */
  async flush(containerId: string): Promise<void> {
    await this.watches.get(containerId)?.flush();
  }

  /**
   * Stops watching a container and returns what the next program needs to go on (in-place
   * upgrade): nothing is reported from here on, and nothing that happened is lost.
   */
  /**
   * Whether flush() would report nothing, told without waiting: false when an OOM notification is
   * pending or still being checked (then flush() before publishing the exit).
   */
  settled(containerId: string): boolean {
    return this.watches.get(containerId)?.settled() ?? true;
  }

  handover(containerId: string): OomWatchHandover | null {
    const w = this.watches.get(containerId);
    if (!w) return null;
    this.watches.delete(containerId);
    return w.handover();
  }

  remove(containerId: string): void {
    this.latestAdd.delete(containerId);
    const w = this.watches.get(containerId);
    if (!w) return;
    this.watches.delete(containerId);
    w.close();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
  }
}
