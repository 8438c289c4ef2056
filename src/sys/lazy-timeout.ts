// Timeouts for waits that are nearly always over within a turn or two of the event loop (a pipe's
// end-of-file after its writer exited, an answer computed at once). A Node timer cleared before it
// is due still wakes the process when it would have been: Node leaves libuv's timer set for the
// earliest list of timers it had. On a quiet shim each such wake-up cost ~0.3-0.9 ms of CPU (cold
// caches), a few of them after every exec and every Stats. These arm the timer only once the wait
// outlived `turns` turns of the loop (setImmediate: each turn polls for I/O without blocking).

/** Cancels a lazyTimeout: neither its immediate nor its timer runs after this. */
export type CancelTimeout = () => void;

/** Runs `fn` once `ms` passed, counted from now, unless cancelled; the timer is armed after `turns` turns. */
export function lazyTimeout(fn: () => void, ms: number, turns = 2): CancelTimeout {
  const started = Date.now();
  let immediate: NodeJS.Immediate | undefined;
  let timer: NodeJS.Timeout | undefined;
  let left = turns;
  const turn = () => {
    if (--left > 0) {
      immediate = setImmediate(turn);
      return;
    }
    immediate = undefined;
    timer = setTimeout(fn, Math.max(1, Math.ceil(ms - (Date.now() - started))));
  };
  immediate = setImmediate(turn);
  return () => {
    if (immediate) clearImmediate(immediate);
    if (timer) clearTimeout(timer);
    immediate = timer = undefined;
  };
}

/**
 * `done`, or false once `ms` passed (lazyTimeout's timer): for waits with a bound that almost
 * never comes into play.
 */
export async function withinLazy(done: Promise<unknown>, ms: number): Promise<boolean> {
  let cancel: CancelTimeout = () => {};
  const timedOut = new Promise<boolean>((r) => (cancel = lazyTimeout(() => r(false), ms)));
  try {
    return await Promise.race([done.then(() => true), timedOut]);
  } finally {
    cancel();
  }
}
