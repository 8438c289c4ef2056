// Node flags of the long-lived daemon (started by `start` or as a warm spare).
// --no-warnings: containerd reads our output.
// --expose-gc: the idle collector (idle-gc.ts) runs a full collection once the shim goes quiet.
// --max-semi-space-size=1: V8 grows its young generation to 2 x 16 MiB under load and never gives
//   it back; a shim's allocations are small and short-lived, and 1 MiB semi-spaces keep the
//   post-burst RSS ~30 MiB lower (measured with test/stress/leak-stress.ts).
export const DAEMON_NODE_FLAGS: readonly string[] = ['--no-warnings', '--expose-gc', '--max-semi-space-size=1'];
