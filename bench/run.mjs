// `npm run bench [-- --quick]`: runs the compiled benchmark (dist/bench/run.js), building the
// project first when it has not been built. Arguments are passed on.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const compiled = join(root, 'dist', 'bench', 'run.js');
function run(args) {
  try {
    execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  } catch (err) {
    process.exit(err.status ?? 1);
  }
}
if (!existsSync(compiled) || !existsSync(join(root, 'dist', 'src', 'daemon', 'main.js')))
  run([join(root, 'scripts', 'build.mjs')]);
run([compiled, ...process.argv.slice(2)]);
