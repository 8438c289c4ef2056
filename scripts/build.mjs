// Build: generate static protobuf code from proto/, compile TypeScript, copy generated JS next to it.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { minifyBundle, slimBundle } from './bundle-slim.mjs';
import { lazyTypes } from './proto-lazy.mjs';
import { buildRevision } from './revision.mjs';

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

const gen = join(root, 'src', 'gen');
mkdirSync(gen, { recursive: true });
const protos = protoFiles(join(root, 'proto'));
// Static code so the shim never parses .proto text at start-up. No type URL functions and no long
// variable names (--no-beautify): the shim uses neither, and the bundle's text is kept in the heap of
// every shim process.
run(bin('pbjs'), [
  '-t',
  'static-module',
  '-w',
  'commonjs',
  '--keep-case',
  '--no-verify',
  '--no-delimited',
  '--no-typeurl',
  '--no-beautify',
  '-p',
  join(root, 'proto'),
  '-o',
  join(gen, 'proto.js'),
  ...protos,
]);
run(bin('pbts'), ['--no-comments', '-o', join(gen, 'proto.d.ts'), join(gen, 'proto.js')]);
// Types made on first use (scripts/proto-lazy.mjs), after pbts has read pbjs's own text. The Task
// API's messages are made at load, as before: each RPC's first call would compile and make its
// types (first Stats +0.3-0.6 ms CPU measured), for ~60 KiB of heap.
{
  const lazy = lazyTypes(readFileSync(join(gen, 'proto.js'), 'utf8'), ['containerd.task.v2.']);
  writeFileSync(join(gen, 'proto.js'), lazy.text);
  console.log(`build: ${lazy.lazy} protobuf types made on first use`);
}

rmSync(join(root, 'dist'), { recursive: true, force: true });
// tsc emits even when it reports type errors: finish the tree either way, then fail the build.
let typeErrors = null;
try {
  run(bin('tsc'), ['-p', join(root, 'tsconfig.json')]);
} catch (e) {
  typeErrors = e;
}
mkdirSync(join(root, 'dist', 'src', 'gen'), { recursive: true });
copyFileSync(join(gen, 'proto.js'), join(root, 'dist', 'src', 'gen', 'proto.js'));
const revision = buildRevision(root);
writeFileSync(join(root, 'dist', 'revision.txt'), revision + '\n');
// One file for the shim (dist/src/daemon/boot.js loads it with a V8 code cache): a process then
// compiles one script instead of resolving and compiling a hundred modules. koffi stays outside
// (native addon). Then made smaller for the heap of every shim process (scripts/bundle-slim.mjs):
// minified, with its source map in bundle.js.map (`node scripts/symbolize.mjs` reads stack traces
// through it), or readable with TSSHIM_BUILD_MINIFY=0.
const minify = process.env.TSSHIM_BUILD_MINIFY !== '0';
const bundle = join(root, 'dist', 'src', 'daemon', 'bundle.js');
run(bin('esbuild'), [
  join(root, 'dist', 'src', 'daemon', 'main.js'),
  '--bundle',
  '--platform=node',
  '--format=cjs',
  '--target=node20',
  '--external:koffi',
  '--log-level=warning',
  ...(minify ? ['--sourcemap=inline'] : []),
  `--outfile=${bundle}`,
]);
{
  const esbuild = createRequire(join(root, 'package.json'))('esbuild');
  const text = readFileSync(bundle, 'utf8');
  let acorn; // a dev dependency (eslint's parser): without it the bundle keeps its message conversions
  try {
    acorn = createRequire(join(root, 'package.json'))('acorn');
  } catch {
    acorn = undefined;
  }
  const slim = minify ? minifyBundle(text, esbuild, acorn) : slimBundle(text, esbuild, root);
  writeFileSync(bundle, slim.text);
  if (slim.map) writeFileSync(`${bundle}.map`, slim.map);
  console.log(`build: bundle ${slim.notes.join('; ')}`);
}
// The daemon's V8 startup snapshot, for the node that builds (src/daemon/snapshot-build.ts): cold
// starts, spares and upgrades start from it when it fits their node binary and this bundle. An
// installed package makes its own at first use (the blob is not packed: it names this tree's files).
if (!typeErrors) run(process.execPath, [join(root, 'dist', 'src', 'daemon', 'snapshot-build.js')]);
if (typeErrors) {
  console.error('build: TypeScript reported errors');
  process.exit(1);
}
