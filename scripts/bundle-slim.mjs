// Post-processing of the shim's bundle (dist/src/daemon/bundle.js) for a smaller resident heap in
// every shim process. Every step keeps the program's meaning; the build checks what it can.
//
// 1. One namespace object per module for `import * as x`: tsc's __importStar helper (one copy per
//    compiled file) builds a fresh object with a getter per export each time it is called, so the
//    41 files that import node:fs made 41 objects of ~100 getters each: ~5,000 closures, contexts
//    and accessor pairs, ~1 MiB of V8 heap per process. The helper now remembers the object it
//    made for a module (a WeakMap shared by the bundle) and hands the same one out again. The
//    getters read the module's property at each access, as before. The patch adds no line: the
//    bundler's source map stays right for every line.
// 2. Minified (minifyBundle, the default): V8 keeps the bundle's source text in the heap of every
//    shim process (lazy compilation and Function.prototype.toString need it), and the names of
//    its variables in every function's scope info. esbuild's minifier (whitespace, syntax, local
//    names; no keepNames: nothing in the shim reads a function's or class's .name, and the error
//    classes set theirs) makes 1.16 MB of text ~0.8 MB. Stack traces then point into one long
//    line (and a few more: template literals keep their line breaks): bundle.js.map (written next to the bundle, never loaded by the shim) maps them back to
//    the compiled files, with names: `node scripts/symbolize.mjs < trace.txt`. The code starts on
//    line 2, so the wrappers that put a prefix before it on line 1 (boot.ts's Module.wrap, the
//    snapshot's entry) do not shift its columns.
//    Or, readable (TSSHIM_BUILD_MINIFY=0 npm run build, stripIndentation): only leading blanks
//    removed (~0.4 MB). Lines stay where they were, so stack traces keep their line numbers.
//    Blanks at the start of a line inside a template literal are text, not indentation: those
//    lines are left alone (acorn's tokenizer finds them), and an esbuild minification of the
//    result must equal that of the input, or the bundle stays indented.
// 3. No conversions of protobuf messages the shim does not make (dropProtoConversions): pbjs writes
//    a toObject, a toJSON and a fromObject for every message type (~260 KB of the minified
//    bundle's ~820 KB). Only the tests and the CLI use toObject and toJSON (they load
//    dist/src/gen/proto.js, which keeps everything). The shim calls fromObject only in
//    encodeMessage (src/types/codec.ts), for the events it publishes: the types under
//    containerd.events and those their fromObject calls keep theirs. In the bundle the statements
//    that define the others become blanks, line breaks kept, so the source map stays right.
import { isAscii } from 'node:buffer';
import { createRequire } from 'node:module';

const STAR_CACHE = '__tsshimImportStar';

const STAR_HELPER = /return function\(mod\) \{(\s*)if \(mod && mod\.__esModule\) return mod;(\s*)var result = \{\};/g;

/** Returns the text with every __importStar helper sharing one namespace object per module. */
export function shareImportStar(text) {
  const helpers = (text.match(/__createBinding\d*\(result, mod/g) ?? []).length;
  let patched = 0;
  let out = text.replace(STAR_HELPER, (_m, a, b) => {
    patched++;
    // No new lines: the statements are joined with blanks (a source map of the input stays right).
    return (
      `return function(mod) {${a}if (mod && mod.__esModule) return mod;` +
      `${b}var result = ${STAR_CACHE}.get(mod); if (result) return result;` +
      ` result = {}; if (mod !== null && typeof mod === "object") ${STAR_CACHE}.set(mod, result);`
    );
  });
  if (patched !== helpers) throw new Error(`bundle-slim: ${patched} of ${helpers} __importStar helpers recognised`);
  if (!out.startsWith('"use strict";\n')) throw new Error('bundle-slim: the bundle does not start with "use strict"');
  out = out.replace('"use strict";\n', `"use strict";var ${STAR_CACHE} = new WeakMap();\n`);
  return { text: out, patched };
}

/** Leading blanks removed from every line that does not start inside a template literal. */
export function stripIndentation(text, acorn) {
  const keep = []; // [start, end) of template literal text
  for (const tok of acorn.tokenizer(text, { ecmaVersion: 'latest', sourceType: 'script', allowHashBang: true })) {
    if (tok.type === acorn.tokTypes.template || tok.type === acorn.tokTypes.invalidTemplate)
      keep.push([tok.start, tok.end]);
  }
  let k = 0;
  let pos = 0;
  let removed = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineStart = pos;
    pos += lines[i].length + 1;
    while (k < keep.length && keep[k][1] < lineStart) k++;
    if (k < keep.length && keep[k][0] < lineStart && lineStart <= keep[k][1]) continue; // inside a template
    const trimmed = lines[i].replace(/^[ \t]+/, '');
    removed += lines[i].length - trimmed.length;
    lines[i] = trimmed;
  }
  return { text: lines.join('\n'), removed };
}

/** The bundled module of pbjs's static code: its key in esbuild's module table ends so. */
const PROTO_MODULE = /(^|\/)gen\/proto\.js$/;

function isMember(node, name) {
  return node?.type === 'MemberExpression' && !node.computed && node.property.name === name;
}

/** `Type.toObject = function ...`, `Type.fromObject = function ...` or `Type.prototype.toJSON = function ...`. */
function isConversion(stmt) {
  const e = stmt.type === 'ExpressionStatement' ? stmt.expression : null;
  if (e?.type !== 'AssignmentExpression' || e.operator !== '=' || e.right.type !== 'FunctionExpression') return null;
  if (isMember(e.left, 'toObject')) return 'toObject';
  if (isMember(e.left, 'fromObject')) return 'fromObject';
  if (isMember(e.left, 'toJSON') && isMember(e.left.object, 'prototype')) return 'toJSON';
  return null;
}

/** `a.b.c` as ['a', 'b', 'c'], or null for any other expression. */
function memberChain(node) {
  if (node.type === 'Identifier') return [node.name];
  if (node.type !== 'MemberExpression' || node.computed) return null;
  const head = memberChain(node.object);
  return head && [...head, node.property.name];
}

/** The full type name of `$root.a.b.C` (the module's root object first, whatever its name). */
function typeName(node) {
  return memberChain(node)?.slice(1).join('.') ?? null;
}

/** pbjs's fromObject starts with `if (object instanceof $root.<type>) return object;`. */
function fromObjectType(fn) {
  const test = fn.body.body[0]?.test;
  return test?.type === 'BinaryExpression' && test.operator === 'instanceof' ? typeName(test.right) : null;
}

/** Types whose fromObject is called inside `fn` (nested message fields). */
function fromObjectCallees(fn) {
  const out = new Set();
  for (const n of nodesBelow(fn.body)) {
    if (n.type === 'CallExpression' && isMember(n.callee, 'fromObject')) {
      const name = typeName(n.callee.object);
      if (name) out.add(name);
    }
  }
  return out;
}

/** The types whose fromObject encodeMessage reaches from the event types (see step 3). */
const EVENT_TYPES = /^containerd\.events\./;

function reachedFromEvents(fromObjects) {
  const keep = new Set([...fromObjects.keys()].filter((name) => EVENT_TYPES.test(name)));
  if (keep.size === 0) throw new Error('bundle-slim: no fromObject of an event type in the pbjs module');
  for (const name of keep) {
    for (const callee of fromObjects.get(name).callees) {
      if (!fromObjects.has(callee))
        throw new Error(`bundle-slim: ${name}.fromObject calls ${callee}'s, which is not there`);
      keep.add(callee); // a Set's for...of visits what is added while it runs
    }
  }
  return keep;
}

/** Every node below `node` (acorn's tree: child nodes are objects with a `type`), depth first. */
function* nodesBelow(node) {
  for (const value of Object.values(node)) {
    for (const child of Array.isArray(value) ? value : [value]) {
      if (child && typeof child.type === 'string') {
        yield child;
        yield* nodesBelow(child);
      }
    }
  }
}

/**
 * The bundle with the toObject and toJSON definitions of its pbjs module blanked out, and those
 * fromObject definitions that the events do not reach (step 3), the same length and lines. Throws
 * when the module is not found, the three counts differ (pbjs writes one of each per message type)
 * or a fromObject's type cannot be read: a pbjs that writes them otherwise must fail the build, not
 * ship a bundle that misses what it needs.
 */
export function dropProtoConversions(text, acorn) {
  const ast = acorn.parse(text, { ecmaVersion: 'latest', sourceType: 'script', allowHashBang: true });
  const modules = [...nodesBelow(ast)].filter(
    (n) => n.type === 'Property' && n.key.type === 'Literal' && PROTO_MODULE.test(String(n.key.value))
  );
  if (modules.length !== 1) throw new Error(`bundle-slim: ${modules.length} pbjs modules found, expected 1`);
  const ranges = [];
  const counts = { toObject: 0, toJSON: 0, fromObject: 0 };
  const fromObjects = new Map(); // type name -> { range, callees }
  for (const n of nodesBelow(modules[0].value)) {
    const kind = isConversion(n);
    if (!kind) continue;
    counts[kind]++;
    if (kind !== 'fromObject') {
      ranges.push([n.start, n.end]);
      continue;
    }
    const fn = n.expression.right;
    const name = fromObjectType(fn);
    if (!name) throw new Error(`bundle-slim: a fromObject at ${n.start} does not start with its instanceof test`);
    fromObjects.set(name, { range: [n.start, n.end], callees: fromObjectCallees(fn) });
  }
  if (counts.toObject === 0 || counts.toObject !== counts.toJSON || counts.toObject !== counts.fromObject) {
    throw new Error(
      `bundle-slim: ${counts.toObject} toObject, ${counts.toJSON} toJSON and ${counts.fromObject} fromObject definitions in the pbjs module`
    );
  }
  const kept = reachedFromEvents(fromObjects);
  for (const [name, { range }] of fromObjects) if (!kept.has(name)) ranges.push(range);
  ranges.sort((a, b) => a[0] - b[0]);
  let out = '';
  let at = 0;
  for (const [start, end] of ranges) {
    out += text.slice(at, start) + text.slice(start, end).replace(/[^\n]/g, ' ');
    at = end;
  }
  out += text.slice(at);
  return {
    text: out,
    types: counts.toObject,
    keptFromObject: [...kept].sort(),
    bytes: ranges.reduce((sum, [s, e]) => sum + e - s, 0),
  };
}

function droppedNote(slim) {
  return `toObject and toJSON of ${slim.types} message types dropped, fromObject kept for the ${slim.keptFromObject.length} the events reach`;
}

const ESBUILD_TARGET = { format: 'cjs', platform: 'node', target: 'node20' };

/**
 * The minified bundle (step 2 above) and its source map. `text` is the bundler's output; when it ends
 * in an inline source map (esbuild --sourcemap=inline) the map leads to the files bundled, else to
 * `text` itself. Returns `text` for bundle.js (a blank first line, then the code) and
 * `map` for bundle.js.map (of that text, not referenced from it). With `acorn`, step 3 too.
 */
export function minifyBundle(text, esbuild, acorn) {
  const star = shareImportStar(text);
  const slim = acorn ? dropProtoConversions(star.text, acorn) : null;
  const out = esbuild.transformSync(slim ? slim.text : star.text, {
    ...ESBUILD_TARGET,
    minify: true,
    legalComments: 'none',
    charset: 'ascii',
    sourcemap: 'external',
    sourcefile: 'bundle.unminified.js',
  });
  const code = out.code.replace(/\n+$/, '');
  // Strict as before, and ASCII (boot.ts reads an ASCII bundle as latin1).
  if (!code.startsWith('"use strict";')) throw new Error('bundle-slim: the minified bundle is not strict');
  if (!isAscii(Buffer.from(code, 'utf8'))) throw new Error('bundle-slim: the minified bundle is not ASCII');
  const map = JSON.parse(out.map);
  map.file = 'bundle.js';
  map.mappings = `;${map.mappings}`; // the code is on line 2
  return {
    text: `\n${code}\n`,
    map: JSON.stringify(map),
    notes: [
      `${star.patched} import helpers shared`,
      slim ? droppedNote(slim) : 'message conversions kept (no acorn)',
      `minified to ${code.length + 2} bytes`,
    ],
  };
}

/** Steps 1 and 3 and the readable step 2; the latter is skipped (with a note) when acorn is missing or the check fails. */
export function slimBundle(text, esbuild, root) {
  const star = shareImportStar(text);
  let acorn;
  try {
    acorn = createRequire(`${root}/package.json`)('acorn');
  } catch {
    return { text: star.text, notes: [`${star.patched} import helpers shared; indentation kept (no acorn)`] };
  }
  const slim = dropProtoConversions(star.text, acorn);
  const dropped = droppedNote(slim);
  const stripped = stripIndentation(slim.text, acorn);
  const min = (t) => esbuild.transformSync(t, { ...ESBUILD_TARGET, minify: true, legalComments: 'none' }).code;
  if (min(stripped.text) !== min(slim.text)) {
    return {
      text: slim.text,
      notes: [`${star.patched} import helpers shared; ${dropped}; indentation kept (check failed)`],
    };
  }
  return {
    text: stripped.text,
    notes: [`${star.patched} import helpers shared; ${dropped}; ${stripped.removed} bytes of indentation`],
  };
}
