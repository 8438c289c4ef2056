// Hand-written protobuf for the ttrpc envelope (package ttrpc: Request, Response, KeyValue; google.rpc.Status).
// Independent of generated code so the library stays reusable. Defaults are omitted on encode, like Go.
import { Reader, Writer } from 'protobufjs/minimal';

export interface KeyValue {
  key: string;
  value: string;
}

export interface Request {
  service: string;
  method: string;
  payload: Buffer;
  /** Relative deadline in nanoseconds; 0 = none. */
  timeoutNano: number;
  metadata: KeyValue[];
}

export interface AnyMessage {
  typeUrl: string;
  value: Buffer;
}

export interface Status {
  code: number;
  message: string;
  details: AnyMessage[];
}

export interface Response {
  /** Absent on success (Go servers omit it). */
  status?: Status;
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

// Wire types
const VARINT = 0;
const LEN = 2;

function tag(field: number, wire: number): number {
  return (field << 3) | wire;
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.length);
}

function longToNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  return (v as { toNumber(): number }).toNumber();
}

/** Reads fields until `end`, calling `field` for each; unknown fields are skipped by returning false. */
function readFields(r: Reader, end: number, field: (no: number, wire: number) => boolean): void {
  while (r.pos < end) {
    const t = r.uint32();
    const no = t >>> 3;
    const wire = t & 7;
    if (no === 0) throw new Error(`illegal tag 0 (wire type ${wire})`);
    if (!field(no, wire)) skipField(r, wire);
  }
  if (r.pos !== end) throw new Error('unexpected EOF');
}

// Unknown fields are skipped. Groups (wire types 3/4) are refused rather than skipped: nobody sends
// them in ttrpc, and skipping nested groups recursively would let a peer exhaust the stack.
function skipField(r: Reader, wire: number): void {
  switch (wire) {
    case 0:
      r.uint64();
      return;
    case 1:
      r.skip(8);
      return;
    case 2:
      r.skip(r.uint32());
      return;
    case 5:
      r.skip(4);
      return;
    default:
      throw new Error(`unsupported wire type ${wire}`);
  }
}

function expectWire(no: number, wire: number, want: number): void {
  if (wire !== want) throw new Error(`wrong wire type ${wire} for field ${no}`);
}

function readBytes(r: Reader): Buffer {
  return asBuffer(r.bytes());
}

function readString(r: Reader): string {
  return readBytes(r).toString('utf8');
}

// ---- KeyValue ----
function writeKeyValue(w: Writer, kv: KeyValue): void {
  w.uint32(tag(5, LEN)).fork();
  if (kv.key) w.uint32(tag(1, LEN)).string(kv.key);
  if (kv.value) w.uint32(tag(2, LEN)).string(kv.value);
  w.ldelim();
}

function readKeyValue(r: Reader, end: number): KeyValue {
  const kv: KeyValue = { key: '', value: '' };
  readFields(r, end, (no, wire) => {
    if (no === 1) {
      expectWire(no, wire, LEN);
      kv.key = readString(r);
      return true;
    }
    if (no === 2) {
      expectWire(no, wire, LEN);
      kv.value = readString(r);
      return true;
    }
    return false;
  });
  return kv;
}

// ---- Request ----
export function encodeRequest(req: Partial<Request> & { service: string; method: string }): Buffer {
  const w = Writer.create();
  if (req.service) w.uint32(tag(1, LEN)).string(req.service);
  if (req.method) w.uint32(tag(2, LEN)).string(req.method);
  if (req.payload && req.payload.length > 0) w.uint32(tag(3, LEN)).bytes(req.payload);
  if (req.timeoutNano) w.uint32(tag(4, VARINT)).int64(Math.trunc(req.timeoutNano));
  for (const kv of req.metadata ?? []) writeKeyValue(w, kv);
  return asBuffer(w.finish());
}

export function decodeRequest(data: Uint8Array): Request {
  const r = Reader.create(data);
  const req: Request = { service: '', method: '', payload: EMPTY, timeoutNano: 0, metadata: [] };
  readFields(r, data.length, (no, wire) => {
    switch (no) {
      case 1:
        expectWire(no, wire, LEN);
        req.service = readString(r);
        return true;
      case 2:
        expectWire(no, wire, LEN);
        req.method = readString(r);
        return true;
      case 3:
        expectWire(no, wire, LEN);
        req.payload = readBytes(r);
        return true;
      case 4:
        expectWire(no, wire, VARINT);
        req.timeoutNano = longToNumber(r.int64());
        return true;
      case 5: {
        expectWire(no, wire, LEN);
        const len = r.uint32();
        const end = r.pos + len;
        if (end > data.length) throw new Error('unexpected EOF');
        req.metadata.push(readKeyValue(r, end));
        return true;
      }
      default:
        return false;
    }
  });
  return req;
}

// ---- Status / Response ----
function writeStatus(w: Writer, st: Status): void {
  w.uint32(tag(1, LEN)).fork();
  if (st.code) w.uint32(tag(1, VARINT)).int32(st.code);
  if (st.message) w.uint32(tag(2, LEN)).string(st.message);
  for (const d of st.details) {
    w.uint32(tag(3, LEN)).fork();
    if (d.typeUrl) w.uint32(tag(1, LEN)).string(d.typeUrl);
    if (d.value.length) w.uint32(tag(2, LEN)).bytes(d.value);
    w.ldelim();
  }
  w.ldelim();
}

function readAny(r: Reader, end: number): AnyMessage {
  const a: AnyMessage = { typeUrl: '', value: EMPTY };
  readFields(r, end, (no, wire) => {
    if (no === 1) {
      expectWire(no, wire, LEN);
      a.typeUrl = readString(r);
      return true;
    }
    if (no === 2) {
      expectWire(no, wire, LEN);
      a.value = readBytes(r);
      return true;
    }
    return false;
  });
  return a;
}

function readStatus(r: Reader, end: number): Status {
  const st: Status = { code: 0, message: '', details: [] };
  readFields(r, end, (no, wire) => {
    if (no === 1) {
      expectWire(no, wire, VARINT);
      st.code = r.int32();
      return true;
    }
    if (no === 2) {
      expectWire(no, wire, LEN);
      st.message = readString(r);
      return true;
    }
    if (no === 3) {
      expectWire(no, wire, LEN);
      const len = r.uint32();
      const subEnd = r.pos + len;
      if (subEnd > end) throw new Error('unexpected EOF');
      st.details.push(readAny(r, subEnd));
      return true;
    }
    return false;
  });
  return st;
}

/** A success Response carries only the payload (an empty payload makes a 0-byte message). */
export function encodeResponse(res: {
  status?: { code: number; message: string; details?: AnyMessage[] };
  payload?: Uint8Array;
}): Buffer {
  const w = Writer.create();
  if (res.status && (res.status.code !== 0 || res.status.message || res.status.details?.length)) {
    writeStatus(w, { code: res.status.code, message: res.status.message, details: res.status.details ?? [] });
  }
  if (res.payload && res.payload.length > 0) w.uint32(tag(2, LEN)).bytes(res.payload);
  return asBuffer(w.finish());
}

export function decodeResponse(data: Uint8Array): Response {
  const r = Reader.create(data);
  const res: Response = { payload: EMPTY };
  readFields(r, data.length, (no, wire) => {
    if (no === 1) {
      expectWire(no, wire, LEN);
      const len = r.uint32();
      const end = r.pos + len;
      if (end > data.length) throw new Error('unexpected EOF');
      res.status = readStatus(r, end);
      return true;
    }
    if (no === 2) {
      expectWire(no, wire, LEN);
      res.payload = readBytes(r);
      return true;
    }
    return false;
  });
  return res;
}
