// cgroup v1 OOM notification: an eventfd registered against memory.oom_control through
// cgroup.event_control. The kernel also signals the eventfd when the cgroup is removed, so every
// signal is checked against the cgroup's existence before it is reported.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { close as closeFd, eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from '../../sys/libc';
import { exists } from './files';
import { EventfdReader, type EventfdMode } from './eventfd-reader';

async function writeRetryingEINTR(path: string, data: string): Promise<void> {
  for (;;) {
    try {
      await fsp.writeFile(path, data);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINTR') throw err;
    }
  }
}

/** A v1 registration as it crosses an in-place upgrade: the eventfd itself, still registered. */
export interface V1OomHandover {
  efd: number;
  /** Notifications read but not yet checked against the cgroup (the next program checks them). */
  unchecked: number;
}

export class V1OomRegistration {
  private reader!: EventfdReader;
  private checking: Promise<void> = Promise.resolve();
  private unchecked = 0;
  private closed = false;

  private constructor(
    private readonly dirs: string[],
    private readonly onOom: () => void,
    private readonly onGone: () => void
  ) {}

  get mode(): EventfdMode {
    return this.reader.mode;
  }

  /**
   * Registers for OOM notifications of the memory cgroup in `paths`. `onOom` runs once per kernel
   * notification while the cgroup exists; `onGone` once when the cgroup has been removed (the
   * registration has then closed itself).
   */
  static async register(
    paths: Record<string, string>,
    onOom: () => void,
    onGone: () => void,
    force?: EventfdMode
  ): Promise<V1OomRegistration> {
    const memDir = paths.memory;
    if (!memDir) throw new Error('cgroup has no memory controller: cannot watch for OOM');
    const efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      const oomControl = await fsp.open(join(memDir, 'memory.oom_control'), 'r');
      try {
        await writeRetryingEINTR(join(memDir, 'cgroup.event_control'), `${efd} ${oomControl.fd}`);
      } finally {
        await oomControl.close();
      }
    } catch (err) {
      closeFd(efd);
      throw err;
    }
    return V1OomRegistration.reading(efd, paths, onOom, onGone, force);
  }

  /**
   * Takes up the registration a previous program handed over: OOMs the kernel signalled in
   * between are in the eventfd's counter, and the ones it had read but not checked are checked now.
   */
  static adopt(
    from: V1OomHandover,
    paths: Record<string, string>,
    onOom: () => void,
    onGone: () => void,
    force?: EventfdMode
  ): V1OomRegistration {
    const reg = V1OomRegistration.reading(from.efd, paths, onOom, onGone, force);
    for (let i = 0; i < from.unchecked; i++) reg.signalled();
    return reg;
  }

  private static reading(
    efd: number,
    paths: Record<string, string>,
    onOom: () => void,
    onGone: () => void,
    force?: EventfdMode
  ): V1OomRegistration {
    const reg = new V1OomRegistration(Object.values(paths), onOom, onGone);
    reg.reader = new EventfdReader(efd, () => reg.signalled(), force);
    return reg;
  }

  private signalled(): void {
    this.unchecked++;
    // Serialised so events stay in order and a removal is seen once.
    this.checking = this.checking
      .then(async () => {
        if (this.closed) return;
        const present = await Promise.all(this.dirs.map(exists));
        if (this.closed) return;
        this.unchecked--;
        if (present.every(Boolean)) {
          this.onOom();
        } else {
          this.close();
          this.onGone();
        }
      })
      .catch(() => {
        // a throwing callback must not break the chain for later notifications
      });
  }

  /** Handles a notification the event loop has not delivered yet, and waits for pending checks. */
  async flush(): Promise<void> {
    this.reader.drain();
    await this.checking;
  }

  /** Reads a pending counter now; true when no notification waits for its check. */
  settled(): boolean {
    this.reader.drain();
    return this.closed || this.unchecked === 0;
  }

  /** Stops watching but keeps the registration, for the next program (see adopt). */
  handover(): V1OomHandover {
    const efd = this.reader.detach(); // a pending counter becomes one more unchecked notification
    this.closed = true;
    return { efd, unchecked: this.unchecked };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.close();
  }
}
