// boot.js: runs the bundled shim and keeps one V8 code cache per node version and flag set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bundleText, codeCacheFile } from '../../src/daemon/boot';
import { isAscii } from 'node:buffer';

const shimDir = path.resolve(__dirname, '../../src/daemon');

/** A scratch copy of the daemon's loader files in the dist layout (boot.js takes sys/sha256.js from beside it). */
function copyLoader(files: string[]): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-boot-'));
  const dir = path.join(root, 'daemon');
  fs.mkdirSync(dir);
  fs.mkdirSync(path.join(root, 'sys'));
  fs.copyFileSync(path.join(shimDir, '../sys/sha256.js'), path.join(root, 'sys/sha256.js'));
  for (const f of files) fs.copyFileSync(path.join(shimDir, f), path.join(dir, f));
  return dir;
}

test('boot: the cache file name depends on node version, flags and the bundle file', () => {
  const a = codeCacheFile('/d', '1:2:3:4', 'v20.0.0', ['--no-warnings']);
  assert.equal(path.dirname(a), '/d');
  assert.notEqual(a, codeCacheFile('/d', '1:2:3:4', 'v20.0.0', ['--no-warnings', '--expose-gc']));
  assert.notEqual(a, codeCacheFile('/d', '1:2:3:4', 'v22.0.0', ['--no-warnings']));
  assert.notEqual(a, codeCacheFile('/d', '1:9:3:4', 'v20.0.0', ['--no-warnings']), 'another bundle file in its place');
  assert.equal(a, codeCacheFile('/d', '1:2:3:4', 'v20.0.0', ['--no-warnings']));
});

test(
  'boot: runs the bundle, writes its code cache once, and V8 accepts it next time',
  { skip: fs.existsSync(path.join(shimDir, 'bundle.js')) ? false : 'no bundle built' },
  () => {
    const dir = copyLoader(['boot.js', 'code-cache.js', 'entry.js', 'bundle.js']);
    try {
      const run = (...args: string[]) =>
        spawnSync(process.execPath, ['--no-warnings', path.join(dir, 'boot.js'), ...args], {
          encoding: 'utf8',
          cwd: dir,
        });
      const v = run('-v');
      assert.equal(v.status, 0, v.stderr);
      assert.match(v.stdout, /containerd-shim-tsshim-v2:\n {2}Version: /);
      const caches = () => fs.readdirSync(dir).filter((f) => f.endsWith('.v8cache'));
      assert.deepEqual(caches(), [], '-v runs too little to be worth a cache');
      // A run that reaches the shim's own checks (and fails them) leaves the cache at exit.
      const bad = run('-id', 'x', 'delete');
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /shim namespace cannot be empty/);
      assert.equal(caches().length, 1);
      const file = path.join(dir, caches()[0]);
      const before = fs.statSync(file).mtimeMs;
      assert.equal(run('-id', 'x', 'delete').status, 1);
      assert.equal(fs.statSync(file).mtimeMs, before, 'an accepted cache is not rewritten');
      fs.writeFileSync(file, 'garbage');
      assert.equal(run('-id', 'x', 'delete').status, 1, 'a corrupt cache is only a slower start');
      assert.notEqual(fs.readFileSync(file, 'utf8'), 'garbage', 'and it is replaced');
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  }
);

test(
  "boot: a bundle replaced by another of the same length never runs with the old one's cache",
  { skip: fs.existsSync(path.join(shimDir, 'bundle.js')) ? false : 'no bundle built' },
  () => {
    // V8 checks a code cache against the source length only: the cache of the replaced build would
    // be accepted, and its compiled functions would run instead of the new ones (seen as the old
    // behaviour after an upgrade that changed one character).
    const dir = copyLoader(['boot.js', 'code-cache.js', 'entry.js']);
    try {
      const bundle = path.join(dir, 'bundle.js');
      const write = (text: string) => {
        fs.writeFileSync(`${bundle}.new`, text);
        fs.renameSync(`${bundle}.new`, bundle); // as a rebuild or npm install: a new file
      };
      const program = (word: string) => `(function ${word}() { process.stdout.write('${word}'); })();\n`;
      const run = () =>
        spawnSync(process.execPath, ['--no-warnings', path.join(dir, 'boot.js')], { encoding: 'utf8', cwd: dir });
      write(program('alpha'));
      assert.equal(run().stdout, 'alpha');
      assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.v8cache')).length, 1, 'the first run wrote a cache');
      assert.equal(run().stdout, 'alpha', 'and the next one runs with it');
      write(program('omega'));
      assert.equal(run().stdout, 'omega');
    } finally {
      fs.rmSync(path.dirname(dir), { recursive: true, force: true });
    }
  }
);

test('boot: the bundle text is what UTF-8 decoding gives, read the fast way when it is ASCII (as the build writes it)', () => {
  for (const text of ['', 'var a = "x";\n', 'const s = "caf\u00e9 \u{1F600}";', '\u00ff\u0100', 'a\u0000b\u007f']) {
    const bytes = Buffer.from(text, 'utf8');
    assert.equal(bundleText(bytes), bytes.toString('utf8'), JSON.stringify(text));
  }
  assert.equal(
    bundleText(Buffer.from([0x61, 0xe9, 0x62])),
    Buffer.from([0x61, 0xe9, 0x62]).toString('utf8'),
    'invalid UTF-8 as UTF-8 decodes it'
  );
  const bundle = path.join(shimDir, 'bundle.js');
  if (fs.existsSync(bundle))
    assert.ok(isAscii(fs.readFileSync(bundle)), 'the built bundle is ASCII: boot reads it as latin1');
});
