// The layers of src/ (../shared/STYLE.md, docs/DESIGN.md): a module imports only from its own layer
// or a layer below it, and no set of modules imports itself in a circle. This test reads the
// TypeScript sources (not dist/) and fails with the offending import.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Bottom first. The layer of a file is its first directory under src/. */
export const LAYERS = [
  'sys',
  'gen',
  'types',
  'ttrpc',
  'runc',
  'task',
  'shim',
  'diag',
  'upgrade',
  'daemon',
  'cli',
] as const;

const SRC = path.resolve(__dirname, '..', '..', '..', 'src');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (/\.ts$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative module specifiers of static imports, re-exports, dynamic import() and require(). */
export function importedSpecifiers(text: string): string[] {
  const noComments = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm;
  return [...noComments.matchAll(re)].map((m) => m[1]);
}

function resolve(from: string, spec: string): string | null {
  const base = path.resolve(path.dirname(from), spec).replace(/\.js$/, '');
  for (const c of [base + '.ts', path.join(base, 'index.ts'), base + '.js', base + '.d.ts'])
    if (fs.existsSync(c)) return c;
  return null;
}

function layerOf(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0];
}

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of sources(SRC)) {
    const deps: string[] = [];
    for (const spec of importedSpecifiers(fs.readFileSync(f, 'utf8'))) {
      const target = resolve(f, spec);
      assert.ok(target, `${path.relative(SRC, f)}: cannot resolve ${spec}`);
      deps.push(target);
    }
    g.set(f, deps);
  }
  return g;
}

/** Strongly connected components with more than one file (Tarjan), each as a list of files. */
export function circles(g: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(),
    low = new Map<string, number>(),
    onStack = new Set<string>();
  const stack: string[] = [],
    out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (g.get(v) ?? []).includes(v)) out.push(scc);
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) visit(v);
  return out;
}

test('import graph: every file of src/ is in a known layer', () => {
  const unknown = sources(SRC)
    .map(layerOf)
    .filter((l) => !(LAYERS as readonly string[]).includes(l));
  assert.deepEqual([...new Set(unknown)], [], `add the new layer to LAYERS in its place: ${unknown.join(', ')}`);
});

test('import graph: no module imports from a layer above its own', () => {
  const rank = (f: string) => (LAYERS as readonly string[]).indexOf(layerOf(f));
  const upward: string[] = [];
  for (const [f, deps] of graph()) {
    for (const d of deps) if (rank(d) > rank(f)) upward.push(`${path.relative(SRC, f)} -> ${path.relative(SRC, d)}`);
  }
  assert.deepEqual(upward, [], `imports against the layer order ${LAYERS.join(' < ')}`);
});

test('import graph: no circle of imports', () => {
  const found = circles(graph()).map((c) =>
    c
      .map((f) => path.relative(SRC, f))
      .sort()
      .join(' <-> ')
  );
  assert.deepEqual(found, []);
});

test('import graph: the checker sees every kind of import and finds circles', () => {
  assert.deepEqual(
    importedSpecifiers(
      [
        "import { a } from './a';",
        "import type { B } from './b/b';",
        "export * from './c';",
        "const d = await import('./d');",
        "const e = require('./e');",
        "import './f';",
        "// import { x } from './commented';",
        "const s = 'not an import from ./g';",
      ].join('\n')
    ),
    ['./a', './b/b', './c', './d', './e', './f']
  );
  const g = new Map([
    ['a', ['b']],
    ['b', ['c']],
    ['c', ['a']],
    ['d', ['a']],
  ]);
  assert.deepEqual(
    circles(g).map((c) => c.sort()),
    [['a', 'b', 'c']]
  );
});
