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

export class V1OomRegistration {
  private reader!: EventfdReader;
  private checking: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor() {}

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
    const dirs = Object.values(paths);
    const reg = new V1OomRegistration();
    const onSignal = (): void => {
      // Serialised so events stay in order and a removal is seen once.
      reg.checking = reg.checking
        .then(async () => {
          if (reg.closed) return;
          const present = await Promise.all(dirs.map(exists));
          if (reg.closed) return;
          if (present.every(Boolean)) {
            onOom();
          } else {
            reg.close();
            onGone();
          }
        })
        .catch(() => {
          // a throwing callback must not break the chain for later notifications
        });
    };
    reg.reader = new EventfdReader(efd, onSignal, force);
    return reg;
  }

  /** Handles a notification the event loop has not delivered yet, and waits for pending checks. */
  async flush(): Promise<void> {
    this.reader.drain();
    await this.checking;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.close();
  }
}
