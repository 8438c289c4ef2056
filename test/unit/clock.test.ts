// The one clock behind the timestamps the shim sends (src/sys/clock.ts) and its users' conversions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { unixTime, wallClockAt, wallClockNow } from '../../src/sys/clock';
import { timestamp } from '../../src/task/timestamps';
import { GO_ZERO_SECONDS, timestampNow, toNumber } from '../../src/types';
import { encodeDeleteResponse } from '../../src/shim/delete';
import { containerd } from '../../src/gen/proto';

test('clock: nanos agree with the millisecond of `at` and stay within the second', () => {
  for (let i = 0; i < 1000; i++) {
    const t = wallClockNow();
    assert.ok(t.nanos >= 0 && t.nanos < 1e9);
    assert.equal(Math.floor(t.nanos / 1e6), t.at.getTime() % 1000);
  }
});

test('clock: unixTime splits into Timestamp seconds and nanos, before 1970 too', () => {
  assert.deepEqual(unixTime(wallClockAt(1_700_000_000_123)), { seconds: 1_700_000_000, nanos: 123_000_000 });
  assert.deepEqual(unixTime(wallClockAt(-1)), { seconds: -1, nanos: 999_000_000 });
});

test('clock: every Timestamp the shim builds agrees with it', () => {
  assert.deepEqual(timestamp(null), { seconds: GO_ZERO_SECONDS, nanos: 0 });
  assert.deepEqual(timestamp(wallClockAt(5_250)), { seconds: 5, nanos: 250_000_000 });
  const before = Date.now();
  const ts = timestampNow();
  const ms = toNumber(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
  assert.ok(ms >= before && ms <= Date.now(), `${ms} not within [${before}, now]`);
  const d = containerd.task.v2.DeleteResponse.decode(encodeDeleteResponse(1, 137, 1_700_000_000_999));
  assert.deepEqual(
    { seconds: Number(d.exited_at!.seconds), nanos: d.exited_at!.nanos },
    unixTime(wallClockAt(1_700_000_000_999))
  );
});
