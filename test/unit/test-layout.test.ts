// The layout of test/ (issue 15): shared helpers live in test/support/ and nowhere else, a suite
// imports only its own files, support and the sources, and only test files are named *.test.ts
// (scripts/test.mjs runs every *.test.js of a suite; an imported *.test.ts would run its tests again
// in each importer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');
const testDir = path.join(repo, 'test');

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The relative module specifiers of a file (import/export ... from, import(), require()). */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\(\s*|^import\s+)'(\.{1,2}\/[^']+)'/gm))
    out.push(m[1]);
  return out;
}

/** The first folder under test/ a path lies in ('unit', 'e2e', 'support', ...), or null outside test/. */
function suiteOf(p: string): string | null {
  const rel = path.relative(testDir, p);
  return rel.startsWith('..') ? null : rel.split(path.sep)[0];
}

const SUITES_WITH_TESTS = new Set(['unit', 'e2e']);
/** Test files that load another test file on purpose: to run its tests again in another setting. */
const RERUNS = new Set(['test/e2e/parity-per-node.test.ts -> ./parity.test']);
const suiteDirs = fs
  .readdirSync(testDir, { withFileTypes: true })
  .filter((e) => e.isDirectory() && e.name !== 'fixtures' && e.name !== 'proto')
  .map((e) => e.name);

test('test/unit and test/e2e hold only *.test.ts files; no *.test.ts anywhere else under test/', () => {
  const wrong: string[] = [];
  for (const suite of suiteDirs) {
    for (const f of tsFiles(path.join(testDir, suite))) {
      const isTest = f.endsWith('.test.ts');
      if (SUITES_WITH_TESTS.has(suite) !== isTest) wrong.push(path.relative(repo, f));
    }
  }
  assert.deepEqual(wrong, [], 'helpers belong in test/support/, tests in test/unit/ or test/e2e/');
});

test('a suite imports only its own files, test/support and the sources; support imports no suite', () => {
  const wrong: string[] = [];
  for (const suite of suiteDirs) {
    for (const f of tsFiles(path.join(testDir, suite))) {
      for (const spec of relativeImports(f)) {
        const target = path.resolve(path.dirname(f), spec);
        const into = suiteOf(target);
        const ok = into === null || into === 'support' || into === 'fixtures' || into === suite;
        if (!ok) wrong.push(`${path.relative(repo, f)} -> ${spec}: imports another suite`);
        const edge = `${path.relative(repo, f)} -> ${spec}`;
        if (/\.test(\.js)?$/.test(spec) && !RERUNS.has(edge)) wrong.push(`${edge}: imports a test file`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});
