import { test } from 'node:test';
import assert from 'node:assert/strict';
import { absoluteDirs, dropRelativeLibraryDirs } from '../../src/sys/library-path';
import { startEnvironment } from '../../src/shim/spare';

test('library path: empty and relative entries are dropped, absolute ones kept in order', () => {
  assert.equal(absoluteDirs('/opt/containerd/lib:'), '/opt/containerd/lib'); // containerd's opt plugin
  assert.equal(absoluteDirs(':/a::/b:.:lib:/c/'), '/a:/b:/c/');
  assert.equal(absoluteDirs('/a:/b'), '/a:/b');
  assert.equal(absoluteDirs(':.:lib'), '');
});

test('library path: dropRelativeLibraryDirs rewrites LD_LIBRARY_PATH only, and removes it when nothing is left', () => {
  const env: NodeJS.ProcessEnv = { LD_LIBRARY_PATH: '/opt/containerd/lib:', PATH: '/bin:', A: 'b' };
  dropRelativeLibraryDirs(env);
  assert.deepEqual(env, { LD_LIBRARY_PATH: '/opt/containerd/lib', PATH: '/bin:', A: 'b' });
  const relative: NodeJS.ProcessEnv = { LD_LIBRARY_PATH: ':lib', A: 'b' };
  dropRelativeLibraryDirs(relative);
  assert.deepEqual(relative, { A: 'b' });
  for (const untouched of [{ A: 'b' }, { LD_LIBRARY_PATH: '' }, { LD_LIBRARY_PATH: '/x:/y' }] as NodeJS.ProcessEnv[]) {
    const before = { ...untouched };
    dropRelativeLibraryDirs(untouched);
    assert.deepEqual(untouched, before);
  }
});

test('library path: a spare that takes on a start environment drops its relative LD_LIBRARY_PATH entries (startEnvironment)', () => {
  const block = Buffer.from('LD_LIBRARY_PATH=/opt/containerd/lib:\0PATH=/usr/bin:/bin\0');
  assert.deepEqual(startEnvironment(block), { LD_LIBRARY_PATH: '/opt/containerd/lib', PATH: '/usr/bin:/bin' });
});
