// Holds shim events back until the test's event subscription is live again after a containerd
// restart, the way containerd's own subscribers (the CRI plugin) subscribe during start-up before
// any shim event can arrive. Without it, an event the shim delivers in the few milliseconds between
// containerd accepting connections and our Subscribe would look lost although containerd got it.
//
// Shims learn containerd's ttrpc address (TTRPC_ADDRESS) once, when they start. The gate moves the
// restarted containerd to `<address>.real` and makes the old path a symlink to it only when open.
// While closed the path is the dead socket the killed containerd left (kept as `<address>.dead`
// and hard-linked back): a dial gets ECONNREFUSED exactly as after a real crash. (A missing path
// would not do: Go's dialer retries ENOENT for 5 s per attempt, which would stretch the Go shim's
// ~21 s retry budget to almost a minute.)
// Only shims started before install() dial through the gate, so the scenarios create every
// container up front.
import * as fs from 'node:fs';
import type { Containerd } from './harness';

export class EventGate {
  private installed = false;
  readonly realAddress: string;
  private readonly deadSocket: string;

  constructor(private c: Containerd) {
    this.realAddress = `${c.ttrpcAddress}.real`;
    this.deadSocket = `${c.ttrpcAddress}.dead`;
  }

  /** Call after containerd was killed: the next start listens on the real address. */
  install(): void {
    if (this.installed) return;
    if (!fs.lstatSync(this.c.ttrpcAddress).isSocket())
      throw new Error(`${this.c.ttrpcAddress} is not the socket of a killed containerd`);
    fs.renameSync(this.c.ttrpcAddress, this.deadSocket);
    const text = fs.readFileSync(this.c.configFile, 'utf8');
    const from = JSON.stringify(this.c.ttrpcAddress);
    if (!text.includes(from)) throw new Error(`ttrpc address ${from} not found in ${this.c.configFile}`);
    fs.writeFileSync(this.c.configFile, text.replace(from, JSON.stringify(this.realAddress)));
    this.installed = true;
  }

  /** Shims dialling containerd now get ECONNREFUSED, as from the dead socket of a killed containerd. */
  close(): void {
    fs.rmSync(this.c.ttrpcAddress, { force: true });
    fs.linkSync(this.deadSocket, this.c.ttrpcAddress);
  }

  /** Shims reach the running containerd again. */
  open(): void {
    if (!this.installed) return;
    fs.rmSync(this.c.ttrpcAddress, { force: true });
    fs.symlinkSync(this.realAddress, this.c.ttrpcAddress);
  }
}
