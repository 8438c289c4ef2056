// containerd's opt plugin puts "<opt>/lib:" in front of LD_LIBRARY_PATH, so with nothing there
// before, every shim inherits an empty last entry (here: our OPT_LIB with an empty entry after it):
// the current directory, which for runc is the container's bundle. tsshim starts runc with the
// absolute entries only (src/sys/library-path.ts), from a cold-started daemon (the first
// container) and from a warm spare (the second).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startContainerd, uniqueId, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { removeQuietly } from '../support/containers';

const OPT_LIB = '/opt/tsshim-test-opt/lib'; // need not exist: the loader only tries it
let c: Containerd;
let rootfs: string;

before(async () => {
  c = await startContainerd({ env: { LD_LIBRARY_PATH: `${OPT_LIB}:` } });
  rootfs = makeRootfs(c.dir);
});
after(async () => {
  await c?.stop();
});

test('runc never gets an empty or relative LD_LIBRARY_PATH entry from the environment containerd gave the shim', async () => {
  const runc = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim();
  assert.ok(runc, 'runc on PATH');
  const dir = fs.mkdtempSync(path.join(c.dir, 'ldpath-'));
  const log = path.join(dir, 'ld-library-path.log');
  const wrapper = path.join(dir, 'runc-wrapper');
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\nprintf '%s %s\\n' "\${LD_LIBRARY_PATH-<unset>}" "$*" >> ${log}\nexec ${runc} "$@"\n`,
    { mode: 0o755 }
  );
  const toml = path.join(dir, 'tsshim.toml');
  fs.writeFileSync(toml, `BinaryName = ${JSON.stringify(wrapper)}\n`);
  const ids = [uniqueId('ldpath-a'), uniqueId('ldpath-b')];
  try {
    for (const id of ids) {
      const r = await c.ctr(
        [
          'run',
          '--rm',
          '--runtime',
          TSSHIM_RUNTIME,
          ...PATH_ENV_ARGS,
          '--runtime-config-path',
          toml,
          '--rootfs',
          rootfs,
          id,
          '/bin/true',
        ],
        { timeoutMs: 60_000 }
      );
      assert.equal(r.code, 0, r.stderr + c.logTail(2000));
    }
  } finally {
    for (const id of ids) await removeQuietly(c, id);
  }
  const calls = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean);
  for (const id of ids) {
    for (const verb of ['create', 'start', 'delete']) {
      assert.ok(
        calls.some((l) => l.includes(` ${verb} `) && l.endsWith(id)),
        `runc ${verb} of ${id} ran: ${calls.join('\n')}`
      );
    }
  }
  // containerd's own opt plugin (under its --root here) adds its "<opt>/lib:" in front of ours.
  for (const line of calls) {
    const entries = line.split(' ')[0].split(':');
    assert.ok(entries.includes(OPT_LIB), line);
    assert.deepEqual(
      entries.filter((e) => !e.startsWith('/')),
      [],
      `only absolute entries: ${line}`
    );
  }
});
