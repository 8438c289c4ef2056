// int64/uint64 fields decode as Long objects (protobufjs uses the `long` package when present);
// these helpers turn them into plain numbers or bigints.
import type Long from 'long';

export type LongLike = number | bigint | string | Long | null | undefined;

function isLong(x: unknown): x is Long {
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof (x as Long).low === 'number' &&
    typeof (x as Long).high === 'number' &&
    typeof (x as Long).toString === 'function'
  );
}

/** Number value of an int64/uint64 field; absent = 0. Loses precision above 2^53 (like JSON). */
export function toNumber(x: LongLike): number {
  if (x === null || x === undefined) return 0;
  if (typeof x === 'number') return x;
  if (typeof x === 'bigint' || typeof x === 'string') return Number(x);
  if (isLong(x)) return x.toNumber();
  throw new TypeError(`not an integer value: ${String(x)}`);
}

/** Exact value of an int64/uint64 field; absent = 0n. */
export function toBigInt(x: LongLike): bigint {
  if (x === null || x === undefined) return 0n;
  if (typeof x === 'bigint') return x;
  if (typeof x === 'number') return BigInt(x);
  if (typeof x === 'string') return BigInt(x);
  if (isLong(x)) return BigInt(x.toString()); // Long.toString honours its `unsigned` flag
  throw new TypeError(`not an integer value: ${String(x)}`);
}
