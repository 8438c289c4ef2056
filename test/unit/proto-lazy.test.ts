// The generated protobuf module makes its types on first use (scripts/proto-lazy.mjs): the same
// namespaces, keys and working codecs as pbjs's eager text, each type made once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as gen from '../../src/gen/proto';

const repo = path.resolve(__dirname, '../../..');

/** Runs an ES module script (the build's scripts are ES modules; the tests are CommonJS). */
function runModule(source: string): unknown {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

// pbjs's shape: a namespace, a message with a nested message and an enum, a type that reads
// another one inside its functions only.
const SAMPLE = `"use strict";
var $protobuf = { roots: {} };
var $root = $protobuf.roots["default"] || ($protobuf.roots["default"] = {});
$root.pkg = (function() {

    /**
     * Namespace pkg.
     */
    var pkg = {};

    pkg.Outer = (function() {

        /**
         * Constructs a new Outer.
         */
        function Outer(p) {
            made.push("Outer");
        }
        Outer.prototype.name = "";
        Outer.other = function() { return $root.pkg.Other; };

        Outer.Inner = (function() {
            function Inner() {}
            made.push("Inner");
            return Inner;
        })();

        Outer.Kind = (function() {
            var valuesById = {}, values = Object.create(valuesById);
            values[valuesById[0] = "A"] = 0;
            return values;
        })();

        made.push("Outer");
        return Outer;
    })();

    pkg.Other = (function() {
        function Other() {}
        made.push("Other");
        return Other;
    })();

    return pkg;
})();

module.exports = $root;
`;

test('proto-lazy: a pbjs-shaped module keeps its keys, values and descriptors; types are made once, on first use', () => {
  const href = new URL(`file://${path.join(repo, 'scripts', 'proto-lazy.mjs')}`).href;
  const out = runModule(`
    import { lazyTypes } from ${JSON.stringify(href)};
    const text = ${JSON.stringify(SAMPLE)};
    const load = (t) => { const made = []; const module = { exports: {} };
      new Function('made', 'module', t)(made, module); return { root: module.exports, made }; };
    const lazy = lazyTypes(text);
    const eager = load(text);
    const l = load(lazy.text);
    const madeAtLoad = [...l.made];
    const keys = (o) => Object.keys(o);
    const desc = (o, k) => { const d = Object.getOwnPropertyDescriptor(o, k); return [d.writable, d.enumerable, d.configurable, 'value' in d]; };
    const before = { pkg: keys(l.root.pkg) };
    const outer = l.root.pkg.Outer;
    const afterOuter = [...l.made];
    const sameOther = outer.other() === l.root.pkg.Other;
    const r = {
      lazy: lazy.lazy, lines: [text.split('\\n').length, lazy.text.split('\\n').length], madeAtLoad, afterOuter,
      keys: [before.pkg, keys(eager.root.pkg), keys(outer), keys(eager.root.pkg.Outer)],
      kind: [outer.Kind.A, eager.root.pkg.Outer.Kind.A, outer.Kind[0]],
      sameOther, innerOnce: l.root.pkg.Outer.Inner === outer.Inner,
      desc: [desc(l.root.pkg, 'Outer'), desc(eager.root.pkg, 'Outer'), desc(outer, 'Inner')],
      made: l.made,
    };
    const part = lazyTypes(text, ['pkg.Outer.']);
    const p = load(part.text);
    r.eagerNested = [part.lazy, 'value' in Object.getOwnPropertyDescriptor(p.root.pkg.Outer, 'Inner'), p.made];
    l.root.pkg.Other = 1; // assignable, as an assigned property
    r.assigned = l.root.pkg.Other;
    console.log(JSON.stringify(r));
  `) as Record<string, unknown>;
  assert.equal(out.lazy, 4, 'Outer, Inner, Kind, Other (not the namespace)');
  assert.deepEqual(out.lines, [(out.lines as number[])[0], (out.lines as number[])[0]], 'no line added or removed');
  assert.deepEqual(out.madeAtLoad, [], 'nothing made at load');
  assert.deepEqual(out.afterOuter, ['Outer'], 'reading Outer makes Outer alone');
  const k = out.keys as string[][];
  assert.deepEqual(k[0], k[1]);
  assert.deepEqual(k[2], k[3]);
  assert.deepEqual(out.kind, [0, 0, 'A']);
  assert.equal(out.sameOther, true);
  assert.equal(out.innerOnce, true);
  assert.deepEqual(out.made, ['Outer', 'Other', 'Inner'], 'each once');
  const d = out.desc as unknown[][];
  assert.deepEqual(d[0], d[1], 'once read, the same kind of property as the assignment made');
  assert.deepEqual(d[2], [true, true, true, true]);
  assert.equal(out.assigned, 1);
  assert.deepEqual(
    out.eagerNested,
    [2, true, ['Inner', 'Outer']],
    "eager 'pkg.Outer.': Inner and Kind made with Outer"
  );
});

/** Every message type, enum and service of the generated module, by its full name. */
function walk(o: Record<string, unknown>, prefix: string, out: Map<string, unknown>): void {
  for (const k of Object.keys(o)) {
    const v = o[k];
    const name = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'function') out.set(name, v);
    else if (v && typeof v === 'object' && !Array.isArray(v)) {
      if (Object.values(v).every((x) => typeof x === 'number'))
        out.set(name, v); // an enum
      else walk(v as Record<string, unknown>, name, out);
    }
  }
}

test('proto-lazy: the generated module is lazy, and every message type in it works once read', () => {
  const root = gen as unknown as Record<string, unknown>;
  // The Task API's types are made at load (build.mjs), the others on first use.
  const eager = Object.getOwnPropertyDescriptor(gen.containerd.task.v2, 'StatsRequest');
  assert.ok(eager && 'value' in eager, 'made at load');
  const lazy = Object.getOwnPropertyDescriptor(gen.io.containerd.cgroups.v2, 'MemoryStat');
  assert.ok(lazy?.get, 'made on first use');
  const types = new Map<string, unknown>();
  walk(root, '', types);
  assert.ok(types.size > 100, `${types.size} types`);
  let messages = 0;
  for (const [name, t] of types) {
    if (typeof t !== 'function' || typeof (t as { encode?: unknown }).encode !== 'function') continue;
    const codec = t as unknown as {
      create(o: object): object;
      encode(m: object): { finish(): Uint8Array };
      decode(b: Uint8Array): object;
    };
    const m = codec.decode(codec.encode(codec.create({})).finish());
    assert.ok(m instanceof (t as new () => object), name);
    messages++;
  }
  assert.ok(messages > 90, `${messages} message types`);
  assert.ok(gen.io.containerd.cgroups.v2.MemoryStat === gen.io.containerd.cgroups.v2.MemoryStat);
  const after = Object.getOwnPropertyDescriptor(gen.io.containerd.cgroups.v2, 'MemoryStat');
  assert.ok(after && 'value' in after && after.writable && after.enumerable, 'a plain property once read');
});
