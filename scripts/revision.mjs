// The build's revision (dist/revision.txt: `-v`, the tsshim_info metric, bench results): the
// commit of the tree being built, or 'unknown'.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The commit of the tree in `root`, 12 hex digits, or 'unknown'. */
export function buildRevision(root) {
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    // Not a git checkout. A tree made by `git archive` (bench/README.md builds copies that way) has
    // the commit in scripts/archive-revision, which .gitattributes marks export-subst; in a
    // checkout that file holds the placeholder.
  }
  let archived = '';
  try {
    archived = readFileSync(join(root, 'scripts', 'archive-revision'), 'utf8').trim();
  } catch {
    /* not there either */
  }
  return /^[0-9a-f]{40}$/.test(archived) ? archived.slice(0, 12) : 'unknown';
}
