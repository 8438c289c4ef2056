// The build's post-processing of the shim's bundle (scripts/bundle-slim.mjs): minified, it runs as
// the bundler's output did (strict, one namespace object per module for `import * as`), and its
// source map (bundle.js.map) leads a stack trace of a process that loaded it the way boot.ts does
// back to the compiled file, line and function name (scripts/symbolize.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');
const daemonDir = path.join(repo, 'dist', 'src', 'daemon');

/** tsc's helpers (__createBinding ... __importStar) as this tsc emits them, from a compiled file. */
function tscHelpers(): string {
  const text = fs.readFileSync(path.join(daemonDir, 'serve.js'), 'utf8');
  const end = text.indexOf('Object.defineProperty(exports, "__esModule"');
  assert.ok(end > 0 && text.slice(0, end).includes('__importStar'), 'serve.js starts with tsc helpers');
  return text.slice(0, end);
}

/** Runs an ES module script (the build's scripts are ES modules; the tests are CommonJS). */
function runModule(source: string): unknown {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('bundle-slim: the minified bundle runs as before, and its map leads a stack trace back to file, line and name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-slim-'));
  try {
    const helpers = tscHelpers();
    fs.writeFileSync(
      path.join(dir, 'other.js'),
      `${helpers}Object.defineProperty(exports, "__esModule", { value: true });
const fs = __importStar(require("node:fs"));
exports.fs = fs;
function failingDeepInside(n) {
    if (n > 1)
        throw new Error("failed at " + n);
    return n;
}
exports.fail = (n) => failingDeepInside(n);
`
    );
    fs.writeFileSync(
      path.join(dir, 'main.js'),
      `${helpers}Object.defineProperty(exports, "__esModule", { value: true });
const fs = __importStar(require("node:fs"));
const other = require("./other");
exports.sameNamespace = fs === other.fs;
exports.readsLive = typeof fs.readFileSync === "function";
exports.strict = (function () { return this === undefined; })();
exports.fail = other.fail;
`
    );
    const slim = pathHref(path.join(repo, 'scripts', 'bundle-slim.mjs'));
    const sym = pathHref(path.join(repo, 'scripts', 'symbolize.mjs'));
    const out = runModule(`
      import { isAscii } from 'node:buffer';
      import { createRequire } from 'node:module';
      import * as fs from 'node:fs';
      import * as vm from 'node:vm';
      import Module from 'node:module';
      import { minifyBundle } from ${JSON.stringify(slim)};
      import { symbolize, loadMap } from ${JSON.stringify(sym)};
      const esbuild = createRequire(${JSON.stringify(path.join(repo, 'package.json'))})('esbuild');
      const dir = ${JSON.stringify(dir)};
      const file = dir + '/bundle.js';
      const built = esbuild.buildSync({ entryPoints: [dir + '/main.js'], bundle: true, platform: 'node', format: 'cjs',
        target: 'node20', sourcemap: 'inline', write: false, outfile: file });
      const text = built.outputFiles[0].text;
      const min = minifyBundle(text, esbuild);
      fs.writeFileSync(file, min.text);
      fs.writeFileSync(file + '.map', min.map);
      // As boot.ts loads it: Module.wrap puts its prefix on the first line.
      const wrapper = new vm.Script(Module.wrap(min.text), { filename: file }).runInThisContext();
      const mod = { exports: {} };
      wrapper.call(mod.exports, mod.exports, createRequire(file), mod, file, dir);
      let stack = '';
      try { mod.exports.fail(2); } catch (e) { stack = e.stack; }
      const helpers = (text.match(/__importStar\\d* = /g) || []).length;
      console.log(JSON.stringify({ sameNamespace: mod.exports.sameNamespace, readsLive: mod.exports.readsLive,
        strict: mod.exports.strict, helpers, smaller: min.text.length < text.indexOf('//# sourceMappingURL'),
        ascii: isAscii(Buffer.from(min.text, 'utf8')), minifiedName: !stack.includes('failingDeepInside'),
        stack, symbolized: symbolize(stack, loadMap(file + '.map')) }));
    `) as Record<string, unknown>;
    assert.equal(out.helpers, 2, 'both files brought their __importStar helper');
    assert.equal(out.sameNamespace, true, 'one namespace object per module, minified too');
    assert.equal(out.readsLive, true);
    assert.equal(out.strict, true, 'the minified bundle is strict code, as the bundler output');
    assert.equal(out.smaller, true);
    assert.equal(out.ascii, true, 'boot.ts reads an ASCII bundle as latin1');
    assert.equal(out.minifiedName, true, `the trace names minified functions: ${String(out.stack)}`);
    // The throw is on line 6 of other.js after the helpers; the frame below calls failingDeepInside.
    const throwLine = helpers.split('\n').length - 1 + 6;
    const frames = String(out.symbolized).split('\n');
    assert.match(frames[1], new RegExp(`other\\.js:${throwLine}:\\d+ .*\\[.*bundle\\.js:2:\\d+\\]`), frames[1]);
    assert.match(frames[2], new RegExp(`other\\.js:${throwLine + 3}:\\d+ failingDeepInside \\[`), frames[2]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test(
  "bundle-slim: the build's bundle is minified, starts on line 2, and has its source map beside it",
  {
    skip: fs.existsSync(path.join(daemonDir, 'bundle.js.map'))
      ? false
      : 'no minified bundle built (TSSHIM_BUILD_MINIFY=0)',
  },
  () => {
    const text = fs.readFileSync(path.join(daemonDir, 'bundle.js'), 'latin1');
    assert.ok(text.startsWith('\n"use strict";'), 'a blank first line, then strict code');
    assert.ok(!text.includes('sourceMappingURL'), 'the shim never loads the map');
    const map = JSON.parse(fs.readFileSync(path.join(daemonDir, 'bundle.js.map'), 'utf8')) as {
      sources: string[];
      mappings: string;
    };
    assert.ok(map.mappings.startsWith(';'), 'the map of line 1 is empty');
    assert.ok(
      map.sources.some((s) => s === 'serve.js') && map.sources.some((s) => s === '../task/service.js'),
      'it leads to the compiled files'
    );
  }
);

function pathHref(p: string): string {
  return new URL(`file://${p}`).href;
}
