// The build's revision (scripts/revision.mjs): a checkout's HEAD, and the same commit in a tree
// made by `git archive` (no .git), as bench/README.md builds copies to measure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');

/** buildRevision(root); git looks no higher than root's parent (a temp dir may sit in some work tree). */
function revisionOf(root: string): string {
  const source = `import { buildRevision } from ${JSON.stringify(path.join(repo, 'scripts', 'revision.mjs'))};
process.stdout.write(buildRevision(${JSON.stringify(root)}));`;
  const env = { ...process.env, GIT_CEILING_DIRECTORIES: path.dirname(root) };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

const isCheckout = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repo }).status === 0;

test('a checkout builds as its HEAD', { skip: !isCheckout && 'not a git checkout' }, () => {
  const head = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: repo }).toString().trim();
  assert.equal(revisionOf(repo), head);
});

test(
  'a git archive of HEAD builds as HEAD, a tree without either as unknown',
  { skip: !isCheckout && 'not a git checkout' },
  () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-rev-'));
    try {
      const tar = execFileSync('git', ['archive', 'HEAD', 'scripts', '.gitattributes'], { cwd: repo });
      execFileSync('tar', ['-x', '-C', dir], { input: tar });
      const head = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: repo }).toString().trim();
      assert.equal(revisionOf(dir), head);
      fs.writeFileSync(path.join(dir, 'scripts', 'archive-revision'), '$Format:%H$\n');
      assert.equal(revisionOf(dir), 'unknown');
      fs.rmSync(path.join(dir, 'scripts', 'archive-revision'));
      assert.equal(revisionOf(dir), 'unknown');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
);
