// src/types helpers: timestamps, int64, Any packing, type_urls, event topics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ANY_CODECS,
  EVENT_TYPE_BY_TOPIC,
  GO_ZERO_SECONDS,
  GO_ZERO_TIMESTAMP,
  ServiceName,
  TaskStatus,
  TOPIC_BY_EVENT_TYPE,
  Topic,
  TypeUrl,
  cgroupsV1,
  decodeKnownAny,
  encodeMessage,
  eventKind,
  events,
  goZeroTimestamp,
  isGoZeroTimestamp,
  packAny,
  packMessage,
  protobuf,
  runc,
  task,
  taskV3,
  timestampFromDate,
  timestampFromNanos,
  timestampToDate,
  timestampToNanos,
  toBigInt,
  toNumber,
  typeNameOf,
  unpackAny,
} from '../../src/types';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('GO_ZERO_TIMESTAMP is 0001-01-01T00:00:00Z and encodes as the verified bytes', () => {
  assert.equal(GO_ZERO_SECONDS, -62135596800);
  assert.equal(timestampToDate(GO_ZERO_TIMESTAMP).toISOString(), '0001-01-01T00:00:00.000Z');
  assert.ok(Object.isFrozen(GO_ZERO_TIMESTAMP));
  assert.ok(isGoZeroTimestamp(GO_ZERO_TIMESTAMP));
  assert.ok(isGoZeroTimestamp(goZeroTimestamp()));
  assert.ok(!isGoZeroTimestamp(null));
  assert.ok(!isGoZeroTimestamp({ seconds: GO_ZERO_SECONDS, nanos: 1 }));
  const bytes = encodeMessage(task.StateResponse, { exited_at: GO_ZERO_TIMESTAMP });
  assert.equal(hex(bytes), '520b088092b8c398feffffff01');
  // decoded seconds are a Long; the helpers accept it
  const decoded = task.StateResponse.decode(bytes);
  assert.equal(typeof decoded.exited_at!.seconds, 'object');
  assert.ok(isGoZeroTimestamp(decoded.exited_at));
  assert.equal(toNumber(decoded.exited_at!.seconds), GO_ZERO_SECONDS);
});

test('goZeroTimestamp returns independent copies', () => {
  const a = goZeroTimestamp();
  a.seconds = 5;
  assert.equal(toNumber(goZeroTimestamp().seconds), GO_ZERO_SECONDS);
  assert.equal(toNumber(GO_ZERO_TIMESTAMP.seconds), GO_ZERO_SECONDS);
});

test('timestampFromDate: ms precision plus extra nanos, normalized, also before 1970', () => {
  const t1 = timestampFromDate(new Date('2024-05-06T07:08:09.123Z'), 456_789);
  assert.equal(toNumber(t1.seconds), 1714979289);
  assert.equal(t1.nanos, 123_456_789);

  const carry = timestampFromDate(new Date(1999), 2_000_000); // 1.999 s + 2 ms
  assert.equal(toNumber(carry.seconds), 2);
  assert.equal(carry.nanos, 1_000_000);

  const before = timestampFromDate(new Date(-1)); // 1969-12-31T23:59:59.999Z
  assert.equal(toNumber(before.seconds), -1);
  assert.equal(before.nanos, 999_000_000);

  const whole = timestampFromDate(new Date(3000));
  assert.equal(toNumber(whole.seconds), 3);
  assert.equal(Object.prototype.hasOwnProperty.call(whole, 'nanos'), false, 'nanos 0 stays unset');

  assert.throws(() => timestampFromDate(new Date(NaN)), RangeError);
  assert.throws(() => timestampFromDate(new Date(0), 0.5), RangeError);
});

test('timestampFromNanos / timestampToNanos / timestampToDate round trip', () => {
  for (const ns of [0n, 1n, -1n, 1_714_979_289_123_456_789n, -62_135_596_800_000_000_000n, -1_500_000_001n]) {
    const ts = timestampFromNanos(ns);
    assert.ok((ts.nanos ?? 0) >= 0 && (ts.nanos ?? 0) < 1e9, `nanos range for ${ns}`);
    assert.equal(timestampToNanos(ts), ns);
    // through the wire (seconds become a Long)
    const back = protobuf.Timestamp.decode(protobuf.Timestamp.encode(ts).finish());
    assert.equal(timestampToNanos(back), ns);
  }
  assert.equal(timestampToDate(timestampFromNanos(-1_500_000_001n)).getTime(), -1501); // floors
  assert.equal(timestampToDate(undefined).getTime(), 0);
  assert.equal(timestampToNanos(null), 0n);
  const d = new Date('2030-01-02T03:04:05.678Z');
  assert.equal(timestampToDate(timestampFromDate(d, 999_999)).getTime(), d.getTime());
});

test('toNumber / toBigInt accept Long, number, string, bigint and absent', () => {
  const big = cgroupsV1.PidsStat.decode(
    cgroupsV1.PidsStat.encode(cgroupsV1.PidsStat.fromObject({ current: '18446744073709551615', limit: 300 })).finish()
  );
  assert.equal(toBigInt(big.current), 18446744073709551615n);
  assert.equal(toNumber(big.limit), 300);
  assert.equal(toNumber(undefined), 0);
  assert.equal(toNumber(null), 0);
  assert.equal(toNumber('-5'), -5);
  assert.equal(toNumber(7n), 7);
  assert.equal(toBigInt(-62135596800), -62135596800n);
  assert.equal(toBigInt(undefined), 0n);
  assert.throws(() => toNumber({} as never), TypeError);
});

test('packAny / unpackAny / packMessage with containerd bare type_urls', () => {
  const opts = packMessage(TypeUrl.RuncOptions, runc.Options, { binary_name: 'crun', systemd_cgroup: false });
  assert.equal(opts.type_url, 'containerd.runc.v1.Options');
  assert.equal(
    hex(protobuf.Any.encode(opts).finish()),
    `0a1a${hex(Buffer.from('containerd.runc.v1.Options'))}120632046372756e`
  );
  const back = unpackAny(opts, runc.Options, TypeUrl.RuncOptions);
  assert.equal(back.binary_name, 'crun');
  assert.equal(back.systemd_cgroup, false);
  // type.googleapis.com/ prefix tolerated, other names rejected
  assert.equal(
    unpackAny(
      { type_url: `type.googleapis.com/${TypeUrl.RuncOptions}`, value: opts.value },
      runc.Options,
      TypeUrl.RuncOptions
    ).binary_name,
    'crun'
  );
  assert.throws(() => unpackAny(opts, runc.Options, TypeUrl.RuntimeOptions), TypeError);
  assert.throws(() => unpackAny(null, runc.Options), TypeError);
  // empty value -> the type's defaults; empty bytes stay off the wire
  const empty = packAny(TypeUrl.RuncOptions, new Uint8Array(0));
  assert.equal(hex(protobuf.Any.encode(empty).finish()), `0a1a${hex(Buffer.from('containerd.runc.v1.Options'))}`);
  assert.equal(unpackAny(empty, runc.Options).binary_name, '');
  assert.equal(unpackAny({ type_url: TypeUrl.RuncOptions }, runc.Options).root, '');
});

test('decodeKnownAny decodes registered types and ignores OCI JSON', () => {
  const exit = packMessage(TypeUrl.TaskExit, events.TaskExit, {
    container_id: 'c',
    id: 'c',
    pid: 9,
    exit_status: 3,
    exited_at: GO_ZERO_TIMESTAMP,
  });
  const known = decodeKnownAny(exit);
  assert.equal(known?.typeName, 'containerd.events.TaskExit');
  assert.equal((known?.message as events.TaskExit).exit_status, 3);
  assert.equal(decodeKnownAny(packAny(TypeUrl.OciProcess, Buffer.from('{"args":["sh"]}'))), undefined);
  assert.equal(decodeKnownAny(undefined), undefined);
  for (const [name, codec] of ANY_CODECS) {
    const ctor = codec as unknown as { name: string };
    assert.equal(name.split('.').pop(), ctor.name, `${name} maps to its own class`);
  }
});

test('typeNameOf strips only the googleapis prefix', () => {
  assert.equal(typeNameOf('type.googleapis.com/containerd.events.TaskExit'), 'containerd.events.TaskExit');
  assert.equal(typeNameOf(TypeUrl.OciProcess), 'types.containerd.io/opencontainers/runtime-spec/1/Process');
  assert.equal(typeNameOf(undefined), '');
});

test('topic <-> event type maps cover every event a shim publishes', () => {
  const expected: Record<string, string> = {
    '/tasks/create': 'containerd.events.TaskCreate',
    '/tasks/start': 'containerd.events.TaskStart',
    '/tasks/delete': 'containerd.events.TaskDelete',
    '/tasks/exit': 'containerd.events.TaskExit',
    '/tasks/oom': 'containerd.events.TaskOOM',
    '/tasks/exec-added': 'containerd.events.TaskExecAdded',
    '/tasks/exec-started': 'containerd.events.TaskExecStarted',
    '/tasks/paused': 'containerd.events.TaskPaused',
    '/tasks/resumed': 'containerd.events.TaskResumed',
    '/tasks/checkpointed': 'containerd.events.TaskCheckpointed',
  };
  assert.deepStrictEqual(Object.fromEntries(EVENT_TYPE_BY_TOPIC), expected);
  for (const [topic, type] of Object.entries(expected)) {
    assert.equal(TOPIC_BY_EVENT_TYPE.get(type), topic);
    const kind = eventKind(topic)!;
    assert.equal(kind.typeUrl, type);
    assert.equal((kind.codec as unknown as { name: string }).name, type.split('.').pop());
  }
  assert.equal(eventKind('/tasks/io'), undefined);
  assert.equal(Topic.TaskExit, '/tasks/exit');
});

test('names: services, status enum, v3 service exists in generated code', () => {
  assert.equal(ServiceName.TaskV2, 'containerd.task.v2.Task');
  assert.equal(ServiceName.TaskV3, 'containerd.task.v3.Task');
  assert.equal(ServiceName.Events, 'containerd.services.events.ttrpc.v1.Events');
  assert.equal(typeof taskV3.Task, 'function');
  assert.deepStrictEqual(
    [
      TaskStatus.UNKNOWN,
      TaskStatus.CREATED,
      TaskStatus.RUNNING,
      TaskStatus.STOPPED,
      TaskStatus.PAUSED,
      TaskStatus.PAUSING,
    ],
    [0, 1, 2, 3, 4, 5]
  );
});
