// The server the fuzzers attack, and the check that it still answers afterwards.
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { decodeResponse } from '../../src/ttrpc/codec';
import { FrameDecoder, FrameSink, MessageType } from '../../src/ttrpc/channel';
import { decodeRequest } from '../../src/ttrpc/codec';
import { Client, Code, Server, TtrpcError } from '../../src/ttrpc';
import { FUZZ_SERVICE, nextFrame, Rng } from './frame-gen';
import { RawPeer } from './raw-peer';

export function fuzzServer(): Server {
  const server = new Server({ peerCheck: 'any' });
  server.register(FUZZ_SERVICE, {
    Echo: (p) => p,
    Fail: () => {
      throw new TtrpcError(Code.NOT_FOUND, 'nope: not found');
    },
    Slow: async (p, ctx) => {
      await sleep(p.length % 5, undefined, { signal: ctx.signal }).catch(() => {});
      return p;
    },
  });
  server.registerServerStream(FUZZ_SERVICE, 'Stream', async (p, _ctx, send) => {
    for (let i = 0; i < p.length % 4; i++) await send(p);
  });
  return server;
}

/** Pure decoder pass: frames through FrameDecoder and the envelope codec; returns counts. */
export function fuzzDecoder(seed: number, count: number): { frames: number; decodeErrors: number } {
  const r = new Rng(seed);
  const ids = { last: -1 };
  let frames = 0;
  let decodeErrors = 0;
  const sink: FrameSink = {
    frame: (_h, d) => {
      frames++;
      for (const fn of [decodeRequest, decodeResponse]) {
        try {
          fn(d);
        } catch (err) {
          if (!(err instanceof Error)) throw new Error(`non-Error thrown: ${String(err)}`);
          decodeErrors++;
        }
      }
    },
    oversize: () => {
      frames++;
    },
  };
  let dec = new FrameDecoder(sink);
  let wild = false;
  for (let i = 0; i < count; i++) {
    // A fresh decoder every 100 frames, like a new connection: a corrupted length may legitimately
    // make a decoder wait for (or discard) gigabytes.
    if (i % 100 === 0) {
      dec = new FrameDecoder(sink);
      ids.last = -1;
      wild = r.chance(0.2);
    }
    const f = nextFrame(r, ids, { allowOversizeLength: wild });
    // Split randomly so reassembly is exercised too.
    const cut = r.int(f.length + 1);
    dec.push(f.subarray(0, cut));
    dec.push(f.subarray(cut));
  }
  return { frames, decodeErrors };
}

/**
 * Live pass: `count` frames over connections of `perConnection` frames each. Every frame the server
 * sends back must be a well-formed Response or Data frame. Returns the number of replies seen.
 */
export async function fuzzLive(path: string, seed: number, count: number, perConnection = 100): Promise<number> {
  const r = new Rng(seed);
  let replies = 0;
  for (let sent = 0; sent < count; sent += perConnection) {
    const peer = await RawPeer.connect(path);
    const ids = { last: -1 };
    const n = Math.min(perConnection, count - sent);
    const batch: Buffer[] = [];
    const wild = r.chance(0.2);
    for (let i = 0; i < n; i++) batch.push(nextFrame(r, ids, { allowOversizeLength: wild }));
    peer.write(Buffer.concat(batch));
    await sleep(5);
    peer.end();
    await peer.closed;
    for (let f = await peer.nextFrame(0); f; f = await peer.nextFrame(0)) {
      assert.ok(
        f.header.type === MessageType.RESPONSE || f.header.type === MessageType.DATA,
        `server sent type ${f.header.type}`
      );
      assert.equal(f.header.streamId % 2, f.header.streamId % 2); // any id the peer used may be echoed
      if (f.header.type === MessageType.RESPONSE) decodeResponse(f.data);
      replies++;
    }
  }
  return replies;
}

export async function assertServerHealthy(path: string): Promise<void> {
  const c = await Client.connect(path);
  try {
    assert.deepEqual(
      await c.call(FUZZ_SERVICE, 'Echo', Buffer.from('still alive'), { timeoutMs: 2000 }),
      Buffer.from('still alive')
    );
    const got: Buffer[] = [];
    for await (const m of c.serverStream(FUZZ_SERVICE, 'Stream', Buffer.from('abc'))) got.push(m);
    assert.equal(got.length, 3);
  } finally {
    c.close();
  }
}
