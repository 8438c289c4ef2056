// cgroup v2 OOM notification: inotify (fs.watch) on memory.events and cgroup.events; an increase
// of the oom_kill counter is an OOM kill. Stops when the cgroup is empty or removed.
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { isNotExist } from './errors';
import { readOptional } from './files';
import { parseFlatKeyed } from './stats-v2';
import { u64ToBigInt } from './u64';

/** The oom_kill counter of a memory.events text. */
function oomKillsIn(memoryEvents: string): bigint {
  return u64ToBigInt(parseFlatKeyed(memoryEvents, 'memory.events').get('oom_kill'));
}

/** A v2 watch as it crosses an in-place upgrade: the oom_kill count already reported. */
export interface V2OomHandover {
  /** decimal */ oomKills: string;
}

export class V2OomWatch {
  private readonly watchers: FSWatcher[] = [];
  private lastOomKill = 0n; // as in containerd: the first increase over 0 counts
  private running: Promise<void> | null = null;
  private again = false;
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly onOom: (oomKills: bigint) => void,
    private readonly onStop: (err?: Error) => void
  ) {}

  /**
   * `handedOver` is the oom_kill count a previous program had already reported (in-place
   * upgrade): the watch goes on from it and reads once now, so an OOM kill in between is reported
   * once, and none twice.
   */
  static start(
    dir: string,
    onOom: (oomKills: bigint) => void,
    onStop: (err?: Error) => void,
    handedOver?: V2OomHandover
  ): V2OomWatch {
    const w = new V2OomWatch(dir, onOom, onStop);
    if (handedOver) w.lastOomKill = BigInt(handedOver.oomKills);
    try {
      for (const name of ['memory.events', 'cgroup.events']) {
        const fw = watch(join(dir, name), { persistent: false }, () => w.schedule());
        fw.on('error', () => w.schedule());
        w.watchers.push(fw);
      }
    } catch (err) {
      w.close();
      throw err;
    }
    if (handedOver) w.schedule();
    return w;
  }

  /** Stops watching; what the next program needs to go on without a gap or a repeat. */
  handover(): V2OomHandover {
    this.close(); // a read in flight now reports nothing: its OOM is above the count handed over
    return { oomKills: this.lastOomKill.toString() };
  }

  /** Coalesces bursts of inotify events into one read, never two reads at once. */
  private schedule(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.check().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    });
  }

  private async check(): Promise<void> {
    try {
      const events = await readOptional(join(this.dir, 'memory.events'));
      if (this.closed) return;
      if (events === null) return this.stop();
      const oomKill = oomKillsIn(events);
      if (oomKill > this.lastOomKill) {
        this.lastOomKill = oomKill;
        this.onOom(oomKill);
      }
      const cg = await readOptional(join(this.dir, 'cgroup.events'));
      if (cg === null || /^populated 0$/m.test(cg)) this.stop();
    } catch (err) {
      if (isNotExist(err)) this.stop();
      else this.stop(err as Error);
    }
  }

  private stop(err?: Error): void {
    if (this.closed) return;
    this.close();
    this.onStop(err);
  }

  /** Reads memory.events now (an inotify event may still be queued) and waits for it. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    if (this.closed) return;
    this.schedule();
    // eslint-disable-next-line @typescript-eslint/await-thenable -- schedule() set this.running; TS keeps the loop's narrowing
    while (this.running) await this.running;
  }

  /**
   * True when memory.events shows no OOM kill beyond the ones reported and no read is in flight.
   * One synchronous read of a cgroupfs file; any doubt answers false (flush() then decides).
   */
  settled(): boolean {
    if (this.closed) return true;
    if (this.running) return false;
    try {
      const events = readFileSync(join(this.dir, 'memory.events'), 'utf8');
      return oomKillsIn(events) <= this.lastOomKill;
    } catch {
      return false;
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers.splice(0)) w.close();
  }
}
