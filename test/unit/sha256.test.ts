// The shim's own SHA-256 (src/sys/sha256.ts): socket names, spare pools and code cache names must be
// exactly what node:crypto (and the sh wrapper's sha256sum) computes, and the daemon must not load
// node:crypto at all (its load is ~10 ms of every cold start's CPU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sha256Hex } from '../../src/sys/sha256';

const nodeSha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('sha256: equals node:crypto for every length around the block boundaries, and for random texts', () => {
  assert.equal(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  for (let n = 0; n <= 300; n++) {
    const b = Buffer.alloc(n, n % 251);
    assert.equal(sha256Hex(b), nodeSha(b), `length ${n}`);
  }
  for (let i = 0; i < 300; i++) {
    let s = '';
    const len = Math.floor(Math.random() * 200);
    // Any code point, surrogate pairs included: hashed as UTF-8, as createHash().update(string) does.
    for (let j = 0; j < len; j++) s += String.fromCodePoint(Math.floor(Math.random() * 0x10ffff) & ~0x800);
    assert.equal(sha256Hex(s), createHash('sha256').update(s).digest('hex'), JSON.stringify(s));
  }
  const typical = '/run/containerd/containerd.sock.ttrpc/default/io.containerd.tsshim.v2/some-container';
  assert.equal(sha256Hex(typical), createHash('sha256').update(typical).digest('hex'));
});

test("sha256: the daemon's start, claim, serve and runc modules do not load node:crypto", () => {
  const dist = path.resolve(__dirname, '../../src');
  const modules = ['daemon/boot', 'shim/spare', 'shim/start', 'daemon/serve', 'runc/client'];
  // A script file, not -e: `node -e` loads node:crypto itself.
  const script = `
    for (const m of ${JSON.stringify(modules)}) require(${JSON.stringify(dist)} + '/' + m);
    process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => m === 'NativeModule crypto')));
  `;
  const r = spawnSync(process.execPath, ['--no-warnings', '-'], {
    input: script,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '[]');
});

test('a shim process (boot.js, the bundle, main) loads neither node:crypto nor node:v8 (only a snapshot build does)', () => {
  const boot = path.resolve(__dirname, '../../src/daemon/boot.js');
  const probe = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-mods-')), 'probe.js');
  try {
    fs.writeFileSync(
      probe,
      `process.on('exit', () => process.stderr.write('MODS' + JSON.stringify(process.moduleLoadList.filter((m) => m === 'NativeModule crypto' || m === 'NativeModule v8'))));\n`
    );
    const r = spawnSync(process.execPath, ['--no-warnings', '--require', probe, boot, '-v'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Version: /);
    assert.equal(r.stderr.slice(r.stderr.indexOf('MODS') + 4), '[]');
  } finally {
    fs.rmSync(path.dirname(probe), { recursive: true, force: true });
  }
});
