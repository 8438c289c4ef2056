// The bundle files' one owner (src/task/bundle-files.ts): what the daemon writes, the `delete`
// subcommand reads back, whatever state the shim left them in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  BundleFile,
  DEFAULT_RUNC_ROOT,
  bundleFile,
  readDeleteResponse,
  readInitExit,
  readInitPid,
  readRuntimeFiles,
  writeDeleteResponse,
  writeInitExit,
  writeRuntimeFiles,
  type RecordedOptions,
} from '../../src/task/bundle-files';
import { defaultOptions } from '../../src/task/options';

function bundleDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-bundle-'));
}

const options = (o: Partial<RecordedOptions>): RecordedOptions => ({ ...defaultOptions(), ...o });

test('bundle files: the names containerd-shim-runc-v2 and the sh fast path use', () => {
  assert.deepEqual(
    { ...BundleFile },
    {
      options: 'options.json',
      runtime: 'runtime',
      initPid: 'init.pid',
      runcLog: 'log.json',
      initExit: 'init.exit',
      deleteResponse: '.tsshim-delete-response',
      address: 'address',
      shimPid: 'shim.pid',
    }
  );
  assert.equal(bundleFile('/b', 'initExit'), '/b/init.exit');
});

test('bundle files: the runtime written at Create is the one read back', () => {
  const b = bundleDir();
  writeRuntimeFiles(b, options({ binaryName: '/opt/runc', root: '/srv/runc', systemdCgroup: true, noPivotRoot: true }));
  assert.equal(fs.readFileSync(path.join(b, 'runtime'), 'utf8'), '/opt/runc');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(b, 'options.json'), 'utf8')), {
    no_pivot_root: true,
    binary_name: '/opt/runc',
    root: '/srv/runc',
    systemd_cgroup: true,
  });
  assert.deepEqual(readRuntimeFiles(b), { binary: '/opt/runc', root: '/srv/runc', systemdCgroup: true });
});

test('bundle files: runtime defaults when the files are missing, empty or damaged', () => {
  const b = bundleDir();
  const defaults = { binary: 'runc', root: DEFAULT_RUNC_ROOT, systemdCgroup: false };
  assert.deepEqual(readRuntimeFiles(b), defaults);
  writeRuntimeFiles(b, options({}));
  assert.deepEqual(readRuntimeFiles(b), defaults);
  // options.json's binary_name when `runtime` is empty (written by another shim)
  fs.writeFileSync(path.join(b, 'options.json'), '{"binary_name":"crun"}');
  assert.equal(readRuntimeFiles(b).binary, 'crun');
  const warnings: string[] = [];
  fs.writeFileSync(path.join(b, 'options.json'), '{"root": "/x"'); // torn
  assert.deepEqual(
    readRuntimeFiles(b, (m) => warnings.push(m)),
    defaults
  );
  fs.writeFileSync(path.join(b, 'options.json'), '[1]');
  assert.deepEqual(
    readRuntimeFiles(b, (m) => warnings.push(m)),
    defaults
  );
  assert.equal(warnings.length, 2);
  assert.match(warnings[0], /options\.json: .*using the defaults/);
});

test('bundle files: init.exit round trip; missing or torn reads as "never exited"', () => {
  const b = bundleDir();
  assert.equal(readInitExit(b), null);
  writeInitExit(b, { pid: 42, status: 137, at: 1_700_000_000_123 });
  assert.deepEqual(readInitExit(b), { pid: 42, status: 137, at: 1_700_000_000_123 });
  fs.writeFileSync(path.join(b, 'init.exit'), '{"pid":42,"sta');
  assert.equal(readInitExit(b), null);
  assert.throws(() => writeInitExit(path.join(b, 'gone'), { pid: 1, status: 0, at: 0 }), /ENOENT/);
});

test('bundle files: init.pid as runc writes it (no newline), 0 when absent or not a pid', () => {
  const b = bundleDir();
  assert.equal(readInitPid(b), 0);
  fs.writeFileSync(path.join(b, 'init.pid'), '4242');
  assert.equal(readInitPid(b), 4242);
  fs.writeFileSync(path.join(b, 'init.pid'), 'garbage');
  assert.equal(readInitPid(b), 0);
});

test('bundle files: the delete response is best effort', () => {
  const b = bundleDir();
  assert.equal(readDeleteResponse(b), null);
  assert.equal(writeDeleteResponse(b, Uint8Array.from([8, 1])), true);
  assert.deepEqual([...readDeleteResponse(b)!], [8, 1]);
  assert.equal(writeDeleteResponse(path.join(b, 'gone'), Uint8Array.from([8, 1])), false);
});
