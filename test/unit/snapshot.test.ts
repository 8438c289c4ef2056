// The daemon's V8 startup snapshot (src/daemon/snapshot-build.ts, src/shim/node-flags.ts): a blob is
// made next to a build's bundle and chosen only for the node binary and the bundle it was made
// from; anything else (no blob, a replaced bundle, another node, a bad key) starts from boot.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildSnapshot } from '../../src/daemon/snapshot-build';
import { fileIdentity } from '../../src/daemon/code-cache';
import { DAEMON_NODE_FLAGS, SNAPSHOT_KEY_FILE, daemonNodeArgs, snapshotBlob } from '../../src/shim/node-flags';
import { daemonArgv } from '../../src/upgrade/exec';
import { parseFlags } from '../../src/shim/flags';

const shimDir = path.resolve(__dirname, '../../src/daemon');

/** A build whose "bundle" says where it runs from, and answers -v as the real one does. */
function fakeBuild(main = 'process.stdout.write("Version: fake\\n")'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-snapshot-'));
  fs.writeFileSync(path.join(dir, 'boot.js'), 'process.stdout.write("from boot.js\\n");\n');
  fs.writeFileSync(
    path.join(dir, 'bundle.js'),
    `globalThis.__tsshimSnapshotMain = () => {
      if (process.argv.includes('-v')) { ${main}; return; }
      process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), loaded: globalThis.__tsshimLoadedBundle }));
    };\n`
  );
  return dir;
}

const run = (args: string[]) => spawnSync(process.execPath, args, { encoding: 'utf8', cwd: '/' });

test('snapshot: made for this node and bundle, chosen for them, and the process starts from it with its own argv', () => {
  const dir = fakeBuild();
  try {
    const boot = path.join(dir, 'boot.js');
    assert.deepEqual(daemonNodeArgs(boot), [...DAEMON_NODE_FLAGS, boot], 'no blob yet: boot.js');
    const blob = buildSnapshot(dir);
    assert.ok(blob && fs.existsSync(blob));
    assert.equal(snapshotBlob(dir), blob);
    assert.deepEqual(daemonNodeArgs(boot), [...DAEMON_NODE_FLAGS, '--snapshot-blob', blob, boot]);
    const r = run([...daemonNodeArgs(boot), '-namespace', 'x', 'claim']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.argv, ['-namespace', 'x', 'claim'], 'argv as without a snapshot');
    const bundle = path.join(dir, 'bundle.js');
    assert.deepEqual(out.loaded, {
      file: bundle,
      identity: fileIdentity(fs.statSync(bundle, { bigint: true })),
      from: 'snapshot',
    });
    // Rebuilt: the new blob replaces the old one, whose file is gone.
    assert.equal(buildSnapshot(dir), blob, 'same node and bundle: same blob name');
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.blob')),
      [path.basename(blob)]
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('snapshot: another node binary, a replaced bundle, a bad key or a missing blob fall back to boot.js', () => {
  const dir = fakeBuild();
  try {
    const boot = path.join(dir, 'boot.js');
    const plain = [...DAEMON_NODE_FLAGS, boot];
    const blob = buildSnapshot(dir)!;
    assert.equal(snapshotBlob(dir, '/bin/sh'), null, 'made by another node binary');
    assert.deepEqual(daemonNodeArgs(boot, '/bin/sh'), plain);
    assert.deepEqual(daemonNodeArgs(path.join(dir, 'main.js')), [...DAEMON_NODE_FLAGS, path.join(dir, 'main.js')]);
    const keyFile = path.join(dir, SNAPSHOT_KEY_FILE);
    const key = fs.readFileSync(keyFile, 'utf8');
    for (const bad of [
      key.replace('tsshim-snapshot-1', 'tsshim-snapshot-0'),
      key.replace(/ \S+\n$/, ' ../x.blob\n'),
      '',
    ]) {
      fs.writeFileSync(keyFile, bad);
      assert.deepEqual(daemonNodeArgs(boot), plain, `key ${JSON.stringify(bad)}`);
    }
    fs.writeFileSync(keyFile, key);
    assert.deepEqual(daemonNodeArgs(boot), [...DAEMON_NODE_FLAGS, '--snapshot-blob', blob, boot]);
    fs.renameSync(blob, blob + '.gone');
    assert.deepEqual(daemonNodeArgs(boot), plain, 'blob missing');
    fs.renameSync(blob + '.gone', blob);
    // An install or rebuild writes a new bundle file, even with the same text.
    const bundle = path.join(dir, 'bundle.js');
    fs.writeFileSync(bundle + '.new', fs.readFileSync(bundle));
    fs.renameSync(bundle + '.new', bundle);
    assert.deepEqual(daemonNodeArgs(boot), plain, 'bundle replaced');
    const r = run([...daemonNodeArgs(boot), '-namespace', 'x']);
    assert.equal(r.stdout, 'from boot.js\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('snapshot: a blob that does not start is never installed, and a running build is not raced', () => {
  const dir = fakeBuild('process.exit(3)');
  try {
    assert.throws(() => buildSnapshot(dir));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['boot.js', 'bundle.js'], 'no key, no blob, no leftovers');
    fs.mkdirSync(path.join(dir, '.snapshot-build.lock'));
    assert.equal(buildSnapshot(dir), null, 'another build holds the lock');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test(
  'snapshot: the built shim has one for this node, and it runs the shim',
  { skip: fs.existsSync(path.join(shimDir, 'bundle.js')) ? false : 'no bundle built' },
  () => {
    const blob = snapshotBlob(shimDir);
    assert.ok(blob, 'scripts/build.mjs made the snapshot');
    const r = run([...daemonNodeArgs(path.join(shimDir, 'boot.js')), '-v']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /containerd-shim-tsshim-v2:\n {2}Version: /);
    const bad = run([...daemonNodeArgs(path.join(shimDir, 'boot.js')), '-id', 'x', 'delete']);
    assert.match(bad.stderr, /shim namespace cannot be empty/, "the shim's own checks run");
  }
);

test("snapshot: an in-place upgrade execs the new build with that build's own snapshot, or without one", () => {
  const [withBlob, without] = [fakeBuild(), fakeBuild()];
  try {
    const blob = buildSnapshot(withBlob)!;
    const flags = parseFlags(['-namespace', 'ns', '-id', 'c1', '-address', '/run/c.sock']);
    const argv = daemonArgv(path.join(withBlob, 'boot.js'), flags);
    assert.deepEqual(argv.slice(0, DAEMON_NODE_FLAGS.length + 4), [
      process.execPath,
      ...DAEMON_NODE_FLAGS,
      '--snapshot-blob',
      blob,
      path.join(withBlob, 'boot.js'),
    ]);
    assert.ok(!daemonArgv(path.join(without, 'boot.js'), flags).includes('--snapshot-blob'));
    // The probe and the exec run the same command line: the new build answers from its snapshot.
    const r = run([...argv.slice(1), '-v']);
    assert.equal(r.stdout, 'Version: fake\n');
  } finally {
    fs.rmSync(withBlob, { recursive: true, force: true });
    fs.rmSync(without, { recursive: true, force: true });
  }
});
