// google.protobuf.Timestamp helpers following containerd's conventions (Go's zero time for "not
// exited"; see GO_ZERO_TIMESTAMP).
import { google } from '../gen/proto';
import { toBigInt } from './long';
import { wallClockNow } from '../sys/clock';

const NANOS_PER_SECOND = 1_000_000_000n;

/** Seconds of Go's zero time.Time (0001-01-01T00:00:00Z), containerd's "not exited yet". */
export const GO_ZERO_SECONDS = -62135596800;

/**
 * Go's zero time as a Timestamp. Always send this (never an absent field) for "not exited":
 * containerd 1.6 reads an absent Timestamp as year 1, 1.7+ as 1970. Frozen; pass it as is.
 */
export const GO_ZERO_TIMESTAMP: Readonly<google.protobuf.Timestamp> = Object.freeze(
  google.protobuf.Timestamp.create({ seconds: GO_ZERO_SECONDS })
);

/** A fresh, mutable copy of GO_ZERO_TIMESTAMP. */
export function goZeroTimestamp(): google.protobuf.Timestamp {
  return google.protobuf.Timestamp.create({ seconds: GO_ZERO_SECONDS });
}

export function isGoZeroTimestamp(ts: google.protobuf.ITimestamp | null | undefined): boolean {
  return !!ts && toBigInt(ts.seconds) === BigInt(GO_ZERO_SECONDS) && (ts.nanos ?? 0) === 0;
}

/**
 * Timestamp of `date` plus `extraNanos` (e.g. the sub-millisecond part a Date cannot hold).
 * nanos is always normalized into 0..999,999,999, also before 1970.
 */
export function timestampFromDate(date: Date, extraNanos = 0): google.protobuf.Timestamp {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError('invalid Date');
  if (!Number.isInteger(extraNanos)) throw new RangeError(`extraNanos must be an integer: ${extraNanos}`);
  return timestampFromNanos(BigInt(ms) * 1_000_000n + BigInt(extraNanos));
}

/** Timestamp from nanoseconds since the Unix epoch. */
export function timestampFromNanos(totalNanos: bigint): google.protobuf.Timestamp {
  let seconds = totalNanos / NANOS_PER_SECOND;
  let nanos = totalNanos % NANOS_PER_SECOND;
  if (nanos < 0n) {
    nanos += NANOS_PER_SECOND;
    seconds -= 1n;
  } // floor, not truncate
  const ts = google.protobuf.Timestamp.create({ seconds: Number(seconds) });
  if (nanos !== 0n) ts.nanos = Number(nanos); // leave proto3 defaults unset
  return ts;
}

/** Now (src/sys/clock.ts: sub-millisecond digits from the monotonic clock). */
export function timestampNow(): google.protobuf.Timestamp {
  const { at, nanos } = wallClockNow();
  return timestampFromDate(at, nanos % 1_000_000);
}

/** Nanoseconds since the Unix epoch; absent = 0 (containerd 1.7+ reads absent as 1970). */
export function timestampToNanos(ts: google.protobuf.ITimestamp | null | undefined): bigint {
  if (!ts) return 0n;
  return toBigInt(ts.seconds) * NANOS_PER_SECOND + BigInt(ts.nanos ?? 0);
}

/** Date of a Timestamp (sub-millisecond part dropped); absent = 1970-01-01. */
export function timestampToDate(ts: google.protobuf.ITimestamp | null | undefined): Date {
  const ns = timestampToNanos(ts);
  let ms = ns / 1_000_000n;
  if (ns < 0n && ns % 1_000_000n !== 0n) ms -= 1n; // floor
  return new Date(Number(ms));
}
