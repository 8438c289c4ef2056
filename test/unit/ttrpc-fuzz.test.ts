// Fuzzing in the unit suite: 100,000 decoder frames plus 20,000 frames against a live server, then
// the server must still answer normally. Longer runs: dist/test/fuzz/ttrpc-fuzz.js <count> [seed].
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertServerHealthy, fuzzDecoder, fuzzLive, fuzzServer } from '../support/fuzz-target';
import { tempSocketDir } from '../support/raw-peer';

const SEED = Number(process.env.TTRPC_FUZZ_SEED ?? 20240611);

test('100,000 random and mutated frames through the decoder', () => {
  const { frames, decodeErrors } = fuzzDecoder(SEED, 100_000);
  assert.ok(frames > 50_000, `only ${frames} frames parsed`);
  assert.ok(decodeErrors > 1000, 'mutations did produce malformed envelopes');
});

test('20,000 frames against a live server; it keeps answering', async () => {
  const tmp = tempSocketDir();
  const path = tmp.path('fuzz.sock');
  const server = fuzzServer();
  await server.listen(path);
  try {
    const replies = await fuzzLive(path, SEED, 20_000);
    assert.ok(replies > 1000, `server answered only ${replies} frames`);
    await assertServerHealthy(path);
    await sleep(20);
    assert.equal(server.connectionCount, 0, 'no leaked connections');
  } finally {
    await server.shutdown(100);
    tmp.remove();
  }
});
