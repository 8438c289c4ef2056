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

test("bundle-slim: the pbjs module's toObject and toJSON definitions become blanks, and nothing else changes", () => {
  const slim = pathHref(path.join(repo, 'scripts', 'bundle-slim.mjs'));
  const acornPath = path.join(repo, 'node_modules', 'acorn', 'dist', 'acorn.js');
  const proto = `var require_proto = __commonJS({
  "dist/src/gen/proto.js"(exports, module) {
    $lazy(ns, "T", function() {
      function T(p) { if (p) this.a = p.a; }
      T.prototype.a = 0;
      T.encode = function encode(m, w) { return w; };
      T.fromObject = function fromObject(o) { return new T(o); };
      T.toObject = function toObject(m, o) {
        return { a: m.a };
      };
      T.prototype.toJSON = function toJSON() {
        return this.constructor.toObject(this, {});
      };
      return T;
    });
  }
});
var other = {};
other.toObject = function () { return 2; };
other.prototype = {};
other.prototype.toJSON = function () { return 3; };
`;
  const out = runModule(`
    import { createRequire } from 'node:module';
    import { dropProtoConversions } from ${JSON.stringify(slim)};
    const acorn = createRequire(import.meta.url)(${JSON.stringify(acornPath)});
    const text = ${JSON.stringify(proto)};
    const r = dropProtoConversions(text, acorn);
    let unbalanced = '';
    try { dropProtoConversions(text.replace('T.prototype.toJSON = function', 'T.prototype.toJSON2 = function'), acorn); }
    catch (e) { unbalanced = e.message; }
    let noModule = '';
    try { dropProtoConversions(text.replace('gen/proto.js', 'gen/other.js'), acorn); } catch (e) { noModule = e.message; }
    console.log(JSON.stringify({ text: r.text, types: r.types, bytes: r.bytes, unbalanced, noModule }));
  `) as { text: string; types: number; bytes: number; unbalanced: string; noModule: string };
  assert.equal(out.types, 1);
  assert.equal(out.text.length, proto.length, 'same length');
  assert.deepEqual(out.text.split('\n').length, proto.split('\n').length, 'same lines: the source map stays right');
  assert.doesNotMatch(out.text, /T\.toObject|T\.prototype\.toJSON/, 'both definitions gone from the module');
  assert.match(out.text, /T\.fromObject = function fromObject/, 'fromObject kept (encodeMessage uses it)');
  assert.match(out.text, /T\.encode = function encode/);
  assert.match(out.text, /other\.toObject = function/, 'outside the pbjs module nothing is touched');
  assert.match(out.text, /other\.prototype\.toJSON = function/);
  const changed = [...proto].filter((ch, i) => ch !== out.text[i]).length;
  assert.ok(changed > 0 && changed <= out.bytes, `${changed} characters blanked of the ${out.bytes} bytes reported`);
  assert.match(out.unbalanced, /1 toObject and 0 toJSON/, 'a pbjs that writes them otherwise fails the build');
  assert.match(out.noModule, /0 pbjs modules found/);
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
    assert.ok(text.includes('.fromObject=function'), 'the messages keep fromObject');
    assert.ok(!/\.toObject=function|\.toJSON=function/.test(text), 'and have no toObject or toJSON');
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
