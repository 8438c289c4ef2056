// A second build for the upgrade bench: a copy of this checkout's dist/ and bin/ with another
// version string in package.json (the minimum of makeBuild in test/e2e/live-upgrade.test.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../../test/support/harness';

/** This checkout's shim entry (the build `tsshim upgrade --entry` goes back to). */
export function currentEntry(): string {
  return path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
}

/** Copies this build into `dir` with `version`; returns its shim entry. */
export function makeVersionedBuild(dir: string, version: string): string {
  const root = repoRoot();
  fs.mkdirSync(dir, { recursive: true });
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.cpSync(path.join(root, 'bin'), path.join(dir, 'bin'), { recursive: true });
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ ...pkg, version }));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return path.join(dir, 'dist', 'src', 'daemon', 'boot.js');
}
