// containerd's timestamp conventions (task-api.md §1.3): "not exited" is Go's zero time, which
// containerd 1.6 and 1.7+ decode the same way, unlike an absent field.
import { GO_ZERO_SECONDS } from '../types/timestamp';

export interface TimestampLike { at: Date; nanos: number }

export function timestamp(t: TimestampLike | null | undefined): { seconds: number; nanos: number } {
  if (!t) return { seconds: GO_ZERO_SECONDS, nanos: 0 };
  return { seconds: Math.floor(t.at.getTime() / 1000), nanos: t.nanos };
}

/** Now, with the sub-millisecond part from the monotonic clock so events sort like Go's. */
export function now(): TimestampLike {
  const at = new Date();
  const sub = Number(process.hrtime.bigint() % 1_000_000n);
  return { at, nanos: (at.getTime() % 1000) * 1_000_000 + sub };
}
