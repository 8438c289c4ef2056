// Seeded generator of ttrpc frames: valid ones, mutated ones and garbage. Shared by the fuzz test in
// the unit suite and the standalone fuzz script, so a failing seed reproduces in both.
import { encodeFrame, HEADER_LENGTH, MessageType } from '../../src/ttrpc/channel';
import { encodeRequest, encodeResponse } from '../../src/ttrpc/codec';

/** xorshift32: tiny, fast, deterministic. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

export const FUZZ_SERVICE = 'fuzz.v1.Target';
const SERVICES = [FUZZ_SERVICE, FUZZ_SERVICE, 'other.Service', ''];
const METHODS = ['Echo', 'Fail', 'Slow', 'Stream', 'Nope', ''];

function randomString(r: Rng, max: number): string {
  return r.bytes(r.int(max)).toString('latin1');
}

function validRequestBody(r: Rng): Buffer {
  return encodeRequest({
    service: r.pick(SERVICES),
    method: r.pick(METHODS),
    payload: r.bytes(r.int(64)),
    timeoutNano: r.chance(0.2) ? (r.chance(0.1) ? -1 : r.int(50) * 1e6) : 0,
    metadata: r.chance(0.3) ? [{ key: randomString(r, 12), value: randomString(r, 12) }] : [],
  });
}

function mutate(r: Rng, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const edits = 1 + r.int(4);
  for (let i = 0; i < edits && out.length > 0; i++) {
    const at = r.int(out.length);
    switch (r.int(4)) {
      case 0:
        out[at] ^= 1 << r.int(8);
        break;
      case 1:
        out[at] = r.next() & 0xff;
        break;
      case 2:
        out[at] = r.pick([0x00, 0x7f, 0x80, 0xff]);
        break;
      default:
        return out.subarray(0, at); // truncate
    }
  }
  return out;
}

export interface FrameGenOptions {
  /**
   * Wild mode: raw noise, truncated headers and any announced length (up to 4 GiB), which break frame
   * alignment for the rest of the connection. Tame mode keeps every frame boundary intact.
   */
  allowOversizeLength?: boolean;
}

/**
 * Next frame for a connection whose last request id was `ids.last`. Most frames are well-formed
 * containers around valid, mutated or random bodies; some have corrupted headers or are pure noise.
 */
export function nextFrame(r: Rng, ids: { last: number }, opts: FrameGenOptions = {}): Buffer {
  const kind = r.int(100);
  const freshId = () => (ids.last += 2 * (1 + r.int(2)));
  if (kind < 30) return encodeFrame(freshId(), MessageType.REQUEST, r.chance(0.1) ? r.int(8) : 0, validRequestBody(r));
  if (kind < 50) return encodeFrame(freshId(), MessageType.REQUEST, 0, mutate(r, validRequestBody(r)));
  if (kind < 58)
    return encodeFrame(r.chance(0.5) ? ids.last : r.next(), MessageType.DATA, r.int(8), r.bytes(r.int(32)));
  if (kind < 64) return encodeFrame(r.next(), r.int(256), r.int(256), r.bytes(r.int(48)));
  if (kind < 70)
    return encodeFrame(
      freshId(),
      MessageType.RESPONSE,
      0,
      encodeResponse({ status: { code: r.int(20), message: 'x' } })
    );
  if (kind < 80) return encodeFrame(freshId(), MessageType.REQUEST, 0, r.bytes(r.int(80)));
  if (kind < 90) {
    // Corrupt the header itself (id, type, flags; the length too in wild mode).
    const f = encodeFrame(freshId(), MessageType.REQUEST, 0, validRequestBody(r));
    const h = mutate(r, f.subarray(0, HEADER_LENGTH));
    // Tame mode keeps the frame boundary so the rest of the connection stays parseable.
    if (!opts.allowOversizeLength) {
      if (h.length < HEADER_LENGTH) return encodeFrame(freshId(), MessageType.REQUEST, 0, h);
      f.copy(h, 0, 0, 4);
    }
    return Buffer.concat([h, f.subarray(HEADER_LENGTH)]);
  }
  const noise = r.bytes(r.int(40));
  // Raw noise breaks frame alignment for the rest of the connection; tame mode wraps it in a frame.
  return opts.allowOversizeLength ? noise : encodeFrame(r.next(), r.int(4), r.int(256), noise);
}
