// Build: generate static protobuf code from proto/, compile TypeScript, copy generated JS next to it.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, copyFileSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

function protoFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...protoFiles(p));
    else if (name.endsWith('.proto')) out.push(p);
  }
  return out;
}

// protobufjs-cli 2.x rewrites protobufjs 8 codegen; with protobufjs 7 installed it leaves
// `new this.ctor()` / `instanceof this.ctor` in decode and fromObject, and static classes have
// no `ctor`. Point each one at the class that owns the function (a local in the same scope).
function fixCtorAlias(file) {
  let owner = null;
  const lines = readFileSync(file, 'utf8').split('\n').map((line) => {
    const m = /^\s*(\w+)\.\w+ = function \1\$\w+\(/.exec(line);
    if (m) owner = m[1];
    return owner ? line.replace(/\bthis\.ctor\b/g, owner) : line;
  });
  const text = lines.join('\n');
  if (/\bthis\.ctor\b/.test(text)) throw new Error('pbjs output still uses this.ctor');
  writeFileSync(file, text);
}

const gen = join(root, 'src', 'gen');
mkdirSync(gen, { recursive: true });
const protos = protoFiles(join(root, 'proto'));
// Static code so the shim never parses .proto text at start-up.
run(bin('pbjs'), ['-t', 'static-module', '-w', 'commonjs', '--keep-case', '--no-verify', '--no-delimited', '-p', join(root, 'proto'), '-o', join(gen, 'proto.js'), ...protos]);
fixCtorAlias(join(gen, 'proto.js'));
run(bin('pbts'), ['--no-comments', '-o', join(gen, 'proto.d.ts'), join(gen, 'proto.js')]);

rmSync(join(root, 'dist'), { recursive: true, force: true });
run(bin('tsc'), ['-p', join(root, 'tsconfig.json')]);
mkdirSync(join(root, 'dist', 'src', 'gen'), { recursive: true });
copyFileSync(join(gen, 'proto.js'), join(root, 'dist', 'src', 'gen', 'proto.js'));
let revision = 'unknown';
try { revision = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root }).toString().trim(); } catch { /* not a git checkout */ }
writeFileSync(join(root, 'dist', 'revision.txt'), revision + '\n');
