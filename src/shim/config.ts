// The shim's configuration: the environment, read once, into a frozen object that the composition
// root (src/daemon/main.ts) passes down. No other module of src/ reads tsshim's variables; a warm
// spare reads them again from the environment of the `start` that claims it (spare.ts).
import { DEFAULT_RUNC_TIMEOUT_MS, parseDuration } from '../runc/timeouts';

export interface ShimConfig {
  /** Where group sockets live (containerd's own shim socket dir). */
  readonly socketDir: string;
  /** Pid files, event journals and the warm-spare pool. */
  readonly stateDir: string;
  /** One daemon per namespace instead of one per container group. */
  readonly perNode: boolean;
  /** Keep a warm spare daemon while a shim of the containerd serves. */
  readonly spares: boolean;
  /** Daemons start from the build's V8 startup snapshot when it fits (opt-in: it costs memory). */
  readonly snapshot: boolean;
  /** How long an unclaimed spare waits before it leaves. */
  readonly spareIdleMs: number;
  /** Hand unused memory back to the kernel when the daemon is idle. */
  readonly trim: boolean;
  /** The metrics endpoint: an exact socket path, or a directory for one socket per shim ('' = off). */
  readonly metricsSocket: string;
  readonly metricsDir: string;
  /** Deadline of a runc run when containerd sends none. */
  readonly runcTimeoutMs: number;
  /** containerd's ttrpc address for events (containerd sets it). */
  readonly ttrpcAddress: string;
  /** What `start` hands the daemon it spawns: the socket it bound and the group it serves. */
  readonly handoff: { readonly socket: string; readonly group: string };
  /** Set by an in-place upgrade (src/upgrade/) for the program it execs: the state to restore. */
  readonly upgradeStateFile: string;
  /** Set by an in-place upgrade for its probe of the new build: the state to run a dry restore on. */
  readonly upgradeDryRunFile: string;
}

const DEFAULT_SPARE_IDLE_MS = 10 * 60_000;
export const DEFAULT_SOCKET_DIR = '/run/containerd/s';
export const DEFAULT_STATE_DIR = '/run/tsshim';

/** Every variable tsshim reads, for the README table (a unit test keeps the two in step). */
export const ENVIRONMENT: readonly { name: string; default: string; meaning: string }[] = [
  {
    name: 'TSSHIM_PER_NODE',
    default: 'unset',
    meaning: '`1`: one shim daemon per namespace serves every container (also a runtime option)',
  },
  { name: 'TSSHIM_SPARES', default: '`1`', meaning: '`0`: no warm spare daemon; every start boots a shim cold' },
  {
    name: 'TSSHIM_SNAPSHOT',
    default: '`0`',
    meaning:
      "`1`: daemons and spares start from the build's V8 startup snapshot (less CPU per boot, ~4 MB more memory per shim process)",
  },
  {
    name: 'TSSHIM_SPARE_IDLE_MS',
    default: '600000',
    meaning: 'how long an unclaimed warm spare waits before it leaves',
  },
  {
    name: 'TSSHIM_SPARE_ANSWER_TIMEOUT',
    default: '10',
    meaning:
      "seconds `start` waits for the answer of the warm spare it handed the request to; a spare that has not answered by then (stopped, wedged) is killed and Node's `start` answers",
  },
  {
    name: 'TSSHIM_TRIM',
    default: '`1`',
    meaning: '`0`: an idle daemon does not hand unused memory back to the kernel',
  },
  {
    name: 'TSSHIM_METRICS_DIR',
    default: 'unset (off)',
    meaning: 'serve Prometheus metrics on `<dir>/<shim socket>.metrics.sock`',
  },
  { name: 'TSSHIM_METRICS_SOCKET', default: 'unset', meaning: 'serve Prometheus metrics on exactly this socket' },
  {
    name: 'TSSHIM_RUNC_TIMEOUT',
    default: '`120s`',
    meaning:
      "how long a runtime (runc) command may run when containerd's request carries no deadline (`90`, `30s`, `1500ms`, `2m`); with a deadline, the deadline wins. Clean-up after a failed create gets min(10 s, this)",
  },
  {
    name: 'TSSHIM_SOCKET_DIR',
    default: '`/run/containerd/s`',
    meaning: 'where the shim sockets are (also where `tsshim` looks for them)',
  },
  {
    name: 'TSSHIM_STATE_DIR',
    default: '`/run/tsshim`',
    meaning: 'pid files, event journals, the spare pool (trusted only when root alone can write it)',
  },
  {
    name: 'TSSHIM_NO_FAST_PATH',
    default: 'unset',
    meaning: '`1`: always run `start`/`delete` in Node (no sh fast path in bin/containerd-shim-tsshim-v2)',
  },
  {
    name: 'TTRPC_ADDRESS',
    default: 'set by containerd',
    meaning: "containerd's ttrpc socket, where events are published",
  },
  {
    name: 'TSSHIM_SOCKET, TSSHIM_GROUP',
    default: 'internal',
    meaning: 'set by `start` for the daemon it spawns (the socket and group it serves)',
  },
  {
    name: 'TSSHIM_UPGRADE_STATE',
    default: 'internal',
    meaning: 'set by an in-place upgrade (`tsshim upgrade`) for the build it executes: the state file to restore',
  },
  {
    name: 'TSSHIM_UPGRADE_DRY_RUN',
    default: 'internal',
    meaning:
      "set by an in-place upgrade for its probe of the new build: a copy of the shim's state the probe runs a dry restore on",
  },
  { name: 'TSSHIM_ENV_ROOM', default: 'internal', meaning: "reserved room in a warm spare's environment block" },
  {
    name: 'TSSHIM_SPARE_LAUNCH_NICE',
    default: 'internal',
    meaning:
      'the nice value a warm spare was launched with: a lower one means a start waits for it (it then skips the rest of its warm-up)',
  },
  {
    name: 'TSSHIM_SAVED_NODE_EXTRA_CA_CERTS',
    default: 'internal',
    meaning:
      "NODE_EXTRA_CA_CERTS set aside while a shim's Node boots (it would load certificates a shim never uses); put back at once",
  },
  {
    name: 'XDG_RUNTIME_DIR',
    default: 'the temp dir',
    meaning: "where console sockets and runc's process files are made (as runc and the Go shim do)",
  },
];

export function readConfig(env: NodeJS.ProcessEnv): ShimConfig {
  return Object.freeze({
    socketDir: env.TSSHIM_SOCKET_DIR || DEFAULT_SOCKET_DIR,
    stateDir: env.TSSHIM_STATE_DIR || DEFAULT_STATE_DIR,
    perNode: env.TSSHIM_PER_NODE === '1',
    spares: env.TSSHIM_SPARES !== '0',
    snapshot: env.TSSHIM_SNAPSHOT === '1',
    spareIdleMs: Number(env.TSSHIM_SPARE_IDLE_MS) || DEFAULT_SPARE_IDLE_MS,
    trim: env.TSSHIM_TRIM !== '0',
    metricsSocket: env.TSSHIM_METRICS_SOCKET || '',
    metricsDir: env.TSSHIM_METRICS_DIR || '',
    runcTimeoutMs: parseDuration(env.TSSHIM_RUNC_TIMEOUT) ?? DEFAULT_RUNC_TIMEOUT_MS,
    ttrpcAddress: env.TTRPC_ADDRESS || '',
    handoff: Object.freeze({ socket: env.TSSHIM_SOCKET || '', group: env.TSSHIM_GROUP || '' }),
    upgradeStateFile: env.TSSHIM_UPGRADE_STATE || '',
    upgradeDryRunFile: env.TSSHIM_UPGRADE_DRY_RUN || '',
  });
}
