// uint64 values from cgroup files. Most fit a JS number; limits such as 2^64-1 ("max") or
// 9223372036854771712 (v1 "unlimited") do not, so those become an unsigned Long, which is what
// protobufjs's uint64 writer needs to encode them exactly.
import { util, type Long } from 'protobufjs/minimal';

export type U64 = number | Long;

export const MAX_U64 = (1n << 64n) - 1n;
const MAX_U32 = 4294967295;

/** A bigint in [0, 2^64) as a number when exact, else as an unsigned Long. */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export function u64(v: bigint): U64 {
  if (v <= MAX_SAFE) return Number(v);
  return new util.LongBits(Number(v & 0xffffffffn), Number((v >> 32n) & 0xffffffffn)).toLong(true);
}

/** U64 back to bigint (tests, arithmetic). Accepts plain {low, high} objects too. */
export function u64ToBigInt(v: U64 | null | undefined): bigint {
  if (v == null) return 0n;
  if (typeof v === 'number') return BigInt(v);
  return (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0);
}

export class ParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CgroupParseError';
  }
}

/**
 * Parses decimal text the way the cgroups library does: unsigned 64-bit; a negative number
 * (e.g. memory.soft_limit "-1" on some kernels) reads as 0; anything else is an error.
 */
export function parseU64Big(text: string): bigint {
  if (/^-\d+$/.test(text)) return 0n;
  if (!/^\d+$/.test(text)) throw new ParseError(`invalid unsigned integer ${JSON.stringify(text)}`);
  const v = BigInt(text);
  if (v > MAX_U64) throw new ParseError(`value out of range ${JSON.stringify(text)}`);
  return v;
}

const SMALL_DECIMAL = /^\d{1,15}$/; // below 10^15 < 2^53: exact as a number

export function parseU64(text: string): U64 {
  if (SMALL_DECIMAL.test(text)) return Number(text);
  return u64(parseU64Big(text));
}

/** Like parseU64 but "max" means 2^64-1 (cgroup v2 single-value files). */
export function parseU64OrMax(text: string): U64 {
  return text === 'max' ? u64(MAX_U64) : parseU64(text);
}

/** rdma values: uint32, "max" means 2^32-1; unparsable values leave the field 0 (as Go does). */
export function parseRdmaValue(text: string): number {
  if (text === 'max') return MAX_U32;
  try {
    const v = parseU64Big(text);
    return v > BigInt(MAX_U32) ? 0 : Number(v);
  } catch {
    return 0; // unparsable: the field stays 0, as in Go
  }
}
