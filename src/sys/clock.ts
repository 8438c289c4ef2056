// The shim's one reading of "now" for timestamps it sends (event times, exit times, samples): wall
// time like Go's time.Now(), whose sub-millisecond digits come from the monotonic clock so that
// events taken within one millisecond still sort in order. Split into protobuf Timestamp fields by
// unixTime; src/types/timestamp.ts builds the generated Timestamp from the same two functions.

/** A wall-clock instant: `at` to the millisecond, `nanos` its nanoseconds within the second. */
export interface WallClockTime {
  at: Date;
  /** 0..999,999,999 (protobuf Timestamp.nanos). */
  nanos: number;
}

export function wallClockNow(): WallClockTime {
  const at = new Date();
  return { at, nanos: (at.getTime() % 1000) * 1_000_000 + Number(process.hrtime.bigint() % 1_000_000n) };
}

/** A WallClockTime from milliseconds since the epoch (no sub-millisecond part). */
export function wallClockAt(ms: number): WallClockTime {
  return { at: new Date(ms), nanos: (((ms % 1000) + 1000) % 1000) * 1_000_000 };
}

/** Seconds and nanos of a protobuf Timestamp, as plain numbers (for hand-encoded messages too). */
export function unixTime(t: WallClockTime): { seconds: number; nanos: number } {
  return { seconds: Math.floor(t.at.getTime() / 1000), nanos: t.nanos };
}
