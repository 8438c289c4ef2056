// Standalone fuzzer: node dist/test/fuzz/ttrpc-fuzz.js <count> [seed]
// Pushes <count> frames through the decoder and <count>/5 frames at a live server, then checks health.
import { assertServerHealthy, fuzzDecoder, fuzzLive, fuzzServer } from '../support/fuzz-target';
import { tempSocketDir } from '../support/raw-peer';

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 1_000_000);
  const seed = Number(process.argv[3] ?? Date.now() % 0xffffffff);
  console.log(`ttrpc fuzz: count=${count} seed=${seed}`);
  let t0 = Date.now();
  const d = fuzzDecoder(seed, count);
  console.log(`decoder: ${d.frames} frames, ${d.decodeErrors} envelope errors, ${Date.now() - t0} ms`);
  const tmp = tempSocketDir('ttrpc-fuzz-');
  const path = tmp.path('fuzz.sock');
  const server = fuzzServer();
  await server.listen(path);
  try {
    t0 = Date.now();
    const replies = await fuzzLive(path, seed, Math.ceil(count / 5));
    console.log(`live: ${replies} replies, ${Date.now() - t0} ms`);
    await assertServerHealthy(path);
    console.log('server healthy');
  } finally {
    await server.shutdown(100);
    tmp.remove();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
