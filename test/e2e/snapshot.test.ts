// The daemon's V8 startup snapshot in use (test/unit/snapshot.test.ts covers choosing it and falling
// back): the shim of a cold start, and a spare, boot from the blob scripts/build.mjs made.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { snapshotBlob } from '../../src/shim/node-flags';
import { until } from '../support/wait';

const daemonDir = path.join(repoRoot(), 'dist', 'src', 'daemon');
let c: Containerd;
let rootfs: string;
before(async () => {
  c = await startContainerd({ env: { TSSHIM_SPARES: '0' } });
  rootfs = makeRootfs(c.dir);
});
after(async () => {
  if (c) await c.stop();
});

test(
  'a cold start boots the shim from the snapshot of this build',
  { skip: snapshotBlob(daemonDir) ? false : 'no snapshot built' },
  async () => {
    const id = uniqueId('snap');
    const r = await c.ctr([
      'run',
      '--rm',
      '--runtime',
      TSSHIM_RUNTIME,
      ...PATH_ENV_ARGS,
      '--rootfs',
      rootfs,
      id,
      'echo',
      'from-snapshot',
    ]);
    assert.equal(r.code, 0, r.stderr + c.logTail(2000));
    assert.match(r.stdout, /from-snapshot/);
    const started = await until(() => {
      const lines = c
        .logTail(1 << 20)
        .split('\n')
        .filter((l) => l.includes('shim started'));
      return lines.length ? lines : null;
    }, 'the shim logged its start');
    for (const line of started) assert.match(line, /loaded=snapshot/, line);
  }
);
