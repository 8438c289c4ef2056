// A push-based async queue: the connection pushes stream messages, a consumer iterates them.

export class MessageQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private ended = false;
  private error: unknown = null;
  private consumed = false;

  /** @param onStop called once when the consumer stops early (break/return) */
  constructor(private readonly onStop?: () => void) {}

  get length(): number {
    return this.items.length;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  /** No more items; with `err`, the consumer sees that error after the queued items. */
  end(err?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (err !== undefined) this.error = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      if (this.error !== null) w.reject(this.error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift() as T, done: false });
    if (this.ended) {
      if (this.error !== null) {
        const e = this.error;
        this.error = null; // report once, then behave as finished
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter) return Promise.reject(new Error('concurrent next() on a message queue'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.consumed) throw new Error('a message stream can be iterated only once');
    this.consumed = true;
    return {
      next: () => this.next(),
      return: () => {
        if (!this.ended) {
          this.items.length = 0;
          this.end();
          this.onStop?.();
        }
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
