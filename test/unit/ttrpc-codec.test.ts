// Byte-level tests: framing and envelope encoding against containerd/ttrpc's PROTOCOL.md
// and frames containerd sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeHeader, encodeFrame, FrameDecoder, FrameHeader, MessageType } from '../../src/ttrpc/channel';
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../../src/ttrpc/codec';
import {
  createMetadata,
  getMetadata,
  getMetadataValue,
  metadataFromPairs,
  metadataToPairs,
} from '../../src/ttrpc/metadata';
import { ServiceRegistry } from '../../src/ttrpc/services';
import { Code, TtrpcError, toStatus } from '../../src/ttrpc/status';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const str = (s: string) => Buffer.from(s).toString('hex');

// containerd calling Task/Connect{id:"c1"} with a 5 s deadline and the namespace header.
const CONNECT_FRAME = hex(
  '00000055 00000001 01 00' +
    '0a17' +
    str('containerd.task.v2.Task') +
    '1207' +
    str('Connect') +
    '1a04 0a02' +
    str('c1') +
    '2080e497d012' +
    '2a25 0a1a' +
    str('containerd-namespace-ttrpc') +
    '1207' +
    str('default')
);

test('request encodes byte-exactly like the spec example', () => {
  const body = encodeRequest({
    service: 'containerd.task.v2.Task',
    method: 'Connect',
    payload: hex('0a02' + str('c1')),
    timeoutNano: 5_000_000_000,
    metadata: [{ key: 'containerd-namespace-ttrpc', value: 'default' }],
  });
  assert.equal(body.length, 85);
  assert.deepEqual(encodeFrame(1, MessageType.REQUEST, 0, body), CONNECT_FRAME);
});

test('request decodes from the spec example', () => {
  const h = decodeHeader(CONNECT_FRAME.subarray(0, 10));
  assert.deepEqual(h, { length: 85, streamId: 1, type: 1, flags: 0 });
  const req = decodeRequest(CONNECT_FRAME.subarray(10));
  assert.equal(req.service, 'containerd.task.v2.Task');
  assert.equal(req.method, 'Connect');
  assert.deepEqual(req.payload, hex('0a02' + str('c1')));
  assert.equal(req.timeoutNano, 5_000_000_000);
  assert.deepEqual(req.metadata, [{ key: 'containerd-namespace-ttrpc', value: 'default' }]);
});

test('success and error responses match the spec bytes', () => {
  const ok = encodeResponse({ payload: hex('08d209 10ae2c') });
  assert.deepEqual(encodeFrame(1, MessageType.RESPONSE, 0, ok), hex('00000008 00000001 02 00 1206 08d20910ae2c'));
  const err = encodeResponse({ status: { code: Code.NOT_FOUND, message: 'container not created: not found' } });
  assert.deepEqual(
    encodeFrame(1, MessageType.RESPONSE, 0, err),
    hex('00000026 00000001 02 00 0a24 0805 1220' + str('container not created: not found'))
  );
  // An OK status and an empty payload encode to nothing at all, like Go's servers.
  assert.equal(encodeResponse({ status: { code: 0, message: '' }, payload: Buffer.alloc(0) }).length, 0);
  const back = decodeResponse(err);
  assert.equal(back.status?.code, 5);
  assert.equal(back.status?.message, 'container not created: not found');
  assert.equal(decodeResponse(Buffer.alloc(0)).status, undefined);
});

test('negative timeout and status details round-trip; unknown fields are skipped', () => {
  const body = encodeRequest({ service: 's', method: 'm', timeoutNano: -1 });
  assert.equal(decodeRequest(body).timeoutNano, -1);
  const withUnknown = Buffer.concat([body, hex('30 07'), hex('3a03 616263')]); // field 6 varint, field 7 bytes
  assert.equal(decodeRequest(withUnknown).method, 'm');
  const res = encodeResponse({
    status: { code: 3, message: 'x', details: [{ typeUrl: 't/u', value: Buffer.from([1, 2]) }] },
  });
  assert.deepEqual(decodeResponse(res).status?.details, [{ typeUrl: 't/u', value: Buffer.from([1, 2]) }]);
});

test('malformed envelopes throw instead of returning junk', () => {
  assert.throws(() => decodeRequest(hex('0a05 6162'))); // truncated string
  assert.throws(() => decodeRequest(hex('08 01'))); // service with varint wire type
  assert.throws(() => decodeRequest(hex('2a05 0a10 6162'))); // metadata overruns its length
  assert.throws(() => decodeRequest(hex('00'))); // tag 0
  assert.throws(() => decodeRequest(hex('0f'))); // wire type 7
  assert.throws(() => decodeResponse(hex('0a03 0805'))); // status overruns
  assert.throws(() => decodeRequest(Buffer.alloc(1 << 20, 0x1b))); // a million nested groups: refused, no stack blow-up
  assert.throws(() => decodeRequest(hex('30ffffffffffffffffffff01'))); // over-long varint
});

function collect(maxSize?: number) {
  const frames: Array<{ h: FrameHeader; d: Buffer }> = [];
  const oversized: FrameHeader[] = [];
  const dec = new FrameDecoder(
    { frame: (h, d) => frames.push({ h, d: Buffer.from(d) }), oversize: (h) => oversized.push(h) },
    maxSize
  );
  return { dec, frames, oversized };
}

test('decoder reassembles frames split at every byte boundary', () => {
  const stream = Buffer.concat([
    CONNECT_FRAME,
    encodeFrame(3, 2, 0, Buffer.alloc(0)),
    encodeFrame(5, 3, 5, Buffer.from('xyz')),
  ]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const { dec, frames } = collect();
    dec.push(stream.subarray(0, cut));
    dec.push(stream.subarray(cut));
    assert.equal(frames.length, 3, `cut ${cut}`);
    assert.deepEqual(frames[0].d, CONNECT_FRAME.subarray(10));
    assert.deepEqual(frames[1].h, { length: 0, streamId: 3, type: 2, flags: 0 });
    assert.deepEqual(frames[2].d, Buffer.from('xyz'));
  }
  const { dec, frames } = collect();
  for (const b of stream) dec.push(Buffer.from([b]));
  assert.equal(frames.length, 3);
  assert.equal(dec.midFrame, false);
});

test('decoder discards an oversized frame across chunks and keeps going', () => {
  const { dec, frames, oversized } = collect(16);
  const big = encodeFrame(7, 1, 0, Buffer.alloc(100, 0xaa));
  const after = encodeFrame(9, 1, 0, Buffer.from('ok'));
  dec.push(big.subarray(0, 30));
  assert.equal(oversized.length, 0);
  assert.equal(dec.midFrame, true);
  dec.push(Buffer.concat([big.subarray(30), after]));
  assert.deepEqual(oversized, [{ length: 100, streamId: 7, type: 1, flags: 0 }]);
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0].d, Buffer.from('ok'));
});

test('metadata is case-insensitive and multi-valued', () => {
  const md = metadataFromPairs([
    { key: 'Foo', value: 'a' },
    { key: 'foo', value: 'b' },
    { key: '__proto__', value: 'c' },
  ]);
  assert.deepEqual(getMetadata(md, 'FOO'), ['a', 'b']);
  assert.equal(getMetadataValue(md, '__PROTO__'), 'c');
  assert.deepEqual(getMetadata(md, 'missing'), []);
  assert.deepEqual(metadataToPairs(createMetadata({ A: ['1', '2'], b: '3' })), [
    { key: 'a', value: '1' },
    { key: 'a', value: '2' },
    { key: 'b', value: '3' },
  ]);
});

test("registry answers Go's exact UNIMPLEMENTED messages", () => {
  const reg = new ServiceRegistry();
  reg.add('svc', 'M', { kind: 'unary', handler: () => Buffer.alloc(0) });
  assert.throws(() => reg.add('svc', 'M', { kind: 'unary', handler: () => Buffer.alloc(0) }), /duplicate/);
  assert.throws(
    () => reg.resolve('nope', 'M'),
    (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && e.message === 'service nope'
  );
  assert.throws(
    () => reg.resolve('svc', 'X'),
    (e: TtrpcError) => e.code === Code.UNIMPLEMENTED && e.message === 'method X'
  );
  assert.equal(reg.resolve('svc', 'M').kind, 'unary');
});

test('handler errors map to status codes', () => {
  assert.deepEqual(toStatus(new TtrpcError(Code.NOT_FOUND, 'x: not found')), { code: 5, message: 'x: not found' });
  assert.deepEqual(toStatus(new Error('boom')), { code: 2, message: 'boom' });
  const enoent = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' });
  assert.equal(toStatus(enoent).code, Code.NOT_FOUND);
  assert.deepEqual(toStatus('str'), { code: 2, message: 'str' });
});
