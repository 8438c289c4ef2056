import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { lookPath } from '../../src/runc/look-path';

test('lookPath: first executable file on PATH, cached, looked up again once it is gone', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-lookpath-'));
  try {
    const [a, b, c] = ['a', 'b', 'c'].map((d) => path.join(root, d));
    for (const d of [a, b, c]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(a, 'myrunc'), 'not executable', { mode: 0o644 });
    fs.mkdirSync(path.join(b, 'myrunc')); // a directory is not a binary
    fs.writeFileSync(path.join(c, 'myrunc'), '#!/bin/sh\n', { mode: 0o755 });
    const PATH = ['', 'relative/dir', a, b, c].join(':');
    assert.equal(lookPath('myrunc', PATH), path.join(c, 'myrunc'));
    assert.equal(lookPath('myrunc', PATH), path.join(c, 'myrunc'), 'from the cache');
    fs.rmSync(path.join(c, 'myrunc'));
    assert.equal(lookPath('myrunc', PATH), 'myrunc', 'gone: the bare name, so spawn reports ENOENT');
    fs.chmodSync(path.join(a, 'myrunc'), 0o755);
    assert.equal(lookPath('myrunc', PATH), path.join(a, 'myrunc'));
    assert.equal(lookPath('/opt/x/runc', PATH), '/opt/x/runc', 'a path is used as given');
    assert.equal(lookPath('myrunc', undefined), 'myrunc');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
