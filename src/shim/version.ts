// Version and revision, recorded by the build (scripts/build.mjs writes dist/revision.txt).
import * as fs from 'node:fs';
import * as path from 'node:path';

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  } // not built by scripts/build.mjs
}

const dist = path.join(__dirname, '..', '..');
export const VERSION: string = (() => {
  try {
    return JSON.parse(read(path.join(dist, '..', 'package.json'))).version;
  } catch {
    return '0.0.0';
  } // run outside the package: version unknown
})();
export const REVISION: string = read(path.join(dist, 'revision.txt')) || 'unknown';
