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

test("bundle-slim: the pbjs module's toObject, toJSON and the fromObject the events do not reach become blanks, and nothing else changes", () => {
  const slim = pathHref(path.join(repo, 'scripts', 'bundle-slim.mjs'));
  const acornPath = path.join(repo, 'node_modules', 'acorn', 'dist', 'acorn.js');
  /** A pbjs type as esbuild prints it after proto-lazy.mjs, its fromObject calling `nested`'s. */
  const type = (ns: string, name: string, nested?: string) => `
    $lazy(${ns}, "${name}", function() {
      function ${name}(p) { if (p) this.a = p.a; }
      ${name}.prototype.a = 0;
      ${name}.encode = function encode(m, w) { return w; };
      ${name}.fromObject = function fromObject(d, n) {
        if (d instanceof $root.${ns}.${name})
          return d;
        var m = new $root.${ns}.${name}();
        ${nested ? `m.b = $root.${nested}.fromObject(d.b, n + 1);` : ''}
        return m;
      };
      ${name}.toObject = function toObject(m, o) {
        return { a: m.a };
      };
      ${name}.prototype.toJSON = function toJSON() {
        return this.constructor.toObject(this, {});
      };
      return ${name};
    });`;
  const proto = `var require_proto = __commonJS({
  "dist/src/gen/proto.js"(exports, module) {${type('containerd.events', 'TaskExit', 'google.protobuf.Timestamp')}${type(
    'google.protobuf',
    'Timestamp'
  )}${type('containerd.task.v2', 'StateResponse', 'google.protobuf.Timestamp')}
  }
});
var other = {};
other.toObject = function () { return 2; };
other.fromObject = function () { return 2; };
other.prototype = {};
other.prototype.toJSON = function () { return 3; };
`;
  const out = runModule(`
    import { createRequire } from 'node:module';
    import { dropProtoConversions } from ${JSON.stringify(slim)};
    const acorn = createRequire(import.meta.url)(${JSON.stringify(acornPath)});
    const text = ${JSON.stringify(proto)};
    const r = dropProtoConversions(text, acorn);
    const fails = (t) => { try { dropProtoConversions(t, acorn); return ''; } catch (e) { return e.message; } };
    console.log(JSON.stringify({ text: r.text, types: r.types, kept: r.keptFromObject, bytes: r.bytes,
      unbalanced: fails(text.replace('TaskExit.prototype.toJSON = function', 'TaskExit.prototype.toJSON2 = function')),
      noModule: fails(text.replace('gen/proto.js', 'gen/other.js')),
      noEvents: fails(text.replaceAll('containerd.events', 'containerd.other')),
      missing: fails(text.replace('"Timestamp", function() {', '"Timestamp", function() { return;').replace(
        'Timestamp.fromObject = function fromObject(d, n) {', 'Timestamp.fromObject = function fromObject(d, n) { return d;')) }));
  `) as Record<string, string | string[] | number>;
  const text = String(out.text);
  assert.equal(out.types, 3);
  assert.equal(text.length, proto.length, 'same length');
  assert.equal(text.split('\n').length, proto.split('\n').length, 'same lines: the source map stays right');
  assert.doesNotMatch(
    text,
    /\w+\.toObject = function toObject|\w+\.prototype\.toJSON = function toJSON/,
    'no toObject or toJSON left in the module'
  );
  assert.deepEqual(
    out.kept,
    ['containerd.events.TaskExit', 'google.protobuf.Timestamp'],
    'the event and what its fromObject calls'
  );
  assert.match(text, /TaskExit\.fromObject = function fromObject/);
  assert.match(text, /Timestamp\.fromObject = function fromObject/);
  assert.doesNotMatch(text, /StateResponse\.fromObject/, 'a type the events do not reach loses its fromObject');
  assert.match(text, /StateResponse\.encode = function encode/, 'and keeps its encoder');
  for (const kept of ['other.toObject = function', 'other.fromObject = function', 'other.prototype.toJSON = function'])
    assert.ok(text.includes(kept), `outside the pbjs module nothing is touched: ${kept}`);
  const changed = [...proto].filter((ch, i) => ch !== text[i]).length;
  assert.ok(
    changed > 0 && changed <= Number(out.bytes),
    `${changed} characters blanked of the ${out.bytes} bytes reported`
  );
  assert.match(
    String(out.unbalanced),
    /3 toObject, 2 toJSON and 3 fromObject/,
    'a pbjs that writes them otherwise fails the build'
  );
  assert.match(String(out.noModule), /0 pbjs modules found/);
  assert.match(String(out.noEvents), /no fromObject of an event type/);
  assert.match(String(out.missing), /does not start with its instanceof test/);
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
    assert.ok(text.includes('.fromObject=function'), 'the event types keep fromObject');
    assert.ok(!/\.toObject=function|\.toJSON=function/.test(text), 'no message type has toObject or toJSON');
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
