// containerd's timestamp conventions: "not exited" is Go's zero time (0001-01-01), which
// containerd 1.6 and 1.7+ decode the same way, unlike an absent field (1.6 reads it as year 1,
// 1.7+ as 1970).
import { GO_ZERO_SECONDS } from '../types/timestamp';
import { unixTime, wallClockNow, type WallClockTime } from '../sys/clock';

export type TimestampLike = WallClockTime;

export function timestamp(t: TimestampLike | null | undefined): { seconds: number; nanos: number } {
  return t ? unixTime(t) : { seconds: GO_ZERO_SECONDS, nanos: 0 };
}

/** Now, with the sub-millisecond part from the monotonic clock so events sort like Go's. */
export const now: () => TimestampLike = wallClockNow;
