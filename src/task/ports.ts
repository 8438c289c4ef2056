// What the Task core needs from the process it runs in, declared here and handed in by the daemon
// (src/daemon/serve.ts): the shim's reaper provides both.
import type { Reaper } from '../sys/reaper';

/** Exit statuses of the shim's children, in the order the kernel reported them. */
export type ExitSource = Pick<Reaper, 'subscribe'>;

/** Runs runc and the logging binaries so that their exit status is not taken from them. */
export type ProcessRunner = Pick<Reaper, 'run' | 'spawn'>;
