// Bounded concurrency for commands that talk to many shims at once (exporter scrapes, upgrades).

/**
 * Runs `fn` over `items` with at most `limit` in flight; results in input order. `inOrder`, when
 * given, gets each result as soon as it and every result before it are there: a command can print
 * as it goes, in the order of its input whatever finishes first.
 */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  inOrder?: (result: R, index: number) => void
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  const done: boolean[] = new Array(items.length).fill(false);
  let next = 0;
  let emitted = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
      done[i] = true;
      if (inOrder) for (; emitted < items.length && done[emitted]; emitted++) inOrder(out[emitted], emitted);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return out;
}
