// `-info` and `-v`, the two flags containerd 2.x (and operators) run without a namespace: the
// RuntimeInfo is decoded the way containerd decodes it (proto, then the features Any as JSON).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runtimeInfo, FEATURES_TYPE_URL, ALLOW_MOUNTS_ANNOTATION } from '../../src/shim/info';
import { RUNTIME_NAME } from '../../src/shim/address';
import { VERSION } from '../../src/shim/version';
import { containerd, google } from '../../src/gen/proto';

const MAIN = path.join(__dirname, '..', '..', 'src', 'daemon', 'main.js');
const runcOptions = (o: containerd.runc.v1.IOptions) =>
  Buffer.from(
    google.protobuf.Any.encode({
      type_url: 'containerd.runc.v1.Options',
      value: containerd.runc.v1.Options.encode(o).finish(),
    }).finish()
  );

function hasRuncFeatures(): boolean {
  const r = spawnSync('runc', ['features']);
  return r.status === 0;
}

test('-info with empty stdin: name, version, no options, runc features as a JSON Any', async () => {
  const seen: string[] = [];
  const info = containerd.types.RuntimeInfo.decode(
    await runtimeInfo(Buffer.alloc(0), (b) => {
      seen.push(b);
      return Buffer.from('{"ociVersionMin":"1.0.0"}');
    })
  );
  assert.deepEqual(seen, ['runc']);
  assert.equal(info.name, RUNTIME_NAME);
  assert.equal(info.version?.version, VERSION);
  assert.ok(info.version?.revision);
  assert.equal(info.options, null);
  assert.equal(info.features?.type_url, FEATURES_TYPE_URL);
  assert.equal(JSON.parse(Buffer.from(info.features!.value!).toString()).ociVersionMin, '1.0.0');
  assert.match(info.annotations[ALLOW_MOUNTS_ANNOTATION], /(^|,)overlay(,|$)/);
});

test('-info echoes the options Any and asks the options binary for features', async () => {
  const stdin = runcOptions({ binary_name: 'crun', root: '/run/x' });
  const seen: string[] = [];
  const info = containerd.types.RuntimeInfo.decode(
    await runtimeInfo(stdin, (b) => {
      seen.push(b);
      return null;
    })
  );
  assert.deepEqual(seen, ['crun']);
  assert.equal(info.options?.type_url, 'containerd.runc.v1.Options');
  assert.equal(containerd.runc.v1.Options.decode(info.options!.value!).binary_name, 'crun');
  assert.equal(info.features, null, 'no features command: features left unset, not an empty Any');
});

test('-info: non-JSON features output is dropped; undecodable stdin is an error', async () => {
  const info = containerd.types.RuntimeInfo.decode(
    await runtimeInfo(Buffer.alloc(0), () => Buffer.from('usage: runc ...'))
  );
  assert.equal(info.features, null);
  await assert.rejects(
    runtimeInfo(Buffer.from([0x0a, 0x7f]), () => null),
    /failed to read runtime options/
  );
});

test(
  '-info through the entry point with the real runc',
  { skip: !hasRuncFeatures() && 'runc features unavailable' },
  () => {
    const r = spawnSync(process.execPath, [MAIN, '-info'], { input: runcOptions({ binary_name: 'runc' }) });
    assert.equal(r.status, 0, r.stderr.toString());
    assert.equal(r.stderr.length, 0);
    const info = containerd.types.RuntimeInfo.decode(r.stdout);
    assert.equal(info.name, RUNTIME_NAME);
    assert.equal(info.features?.type_url, FEATURES_TYPE_URL);
    const features = JSON.parse(Buffer.from(info.features!.value!).toString());
    assert.ok(Array.isArray(features.hooks) && features.hooks.includes('prestart'), 'runc features JSON');
    assert.ok(features.mountOptions?.length > 0);
  }
);

test('-v prints name, version and revision and exits 0 without a namespace', () => {
  const r = spawnSync(process.execPath, [MAIN, '-v']);
  assert.equal(r.status, 0, r.stderr.toString());
  const out = r.stdout.toString();
  assert.match(out, /^containerd-shim-tsshim-v2:\n/);
  assert.match(out, new RegExp(`\\n  Version: +${VERSION.replace(/\./g, '\\.')}\\n`));
  assert.match(out, /\n {2}Revision: +\S+\n/);
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8'));
  assert.equal(VERSION, pkg.version);
  assert.equal(spawnSync(process.execPath, [MAIN, '--version']).stdout.toString(), out);
});
