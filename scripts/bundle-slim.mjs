// Post-processing of the shim's bundle (dist/src/daemon/bundle.js) for a smaller resident heap in
// every shim process. Both steps keep the program's meaning; the build checks that.
//
// 1. One namespace object per module for `import * as x`: tsc's __importStar helper (one copy per
//    compiled file) builds a fresh object with a getter per export each time it is called, so the
//    41 files that import node:fs made 41 objects of ~100 getters each: ~5,000 closures, contexts
//    and accessor pairs, ~1 MiB of V8 heap per process. The helper now remembers the object it
//    made for a module (a WeakMap shared by the bundle) and hands the same one out again. The
//    getters read the module's property at each access, as before.
// 2. No indentation: V8 keeps the bundle's source text (1.6 MB) in the heap of every shim process
//    (lazy compilation and Function.prototype.toString need it); ~0.4 MB of it was leading blanks.
//    Lines stay where they were, so stack traces keep their line numbers. Blanks at the start of a
//    line inside a template literal are text, not indentation: those lines are left alone (acorn's
//    tokenizer finds them), and an esbuild minification of the result must equal that of the
//    input, or the bundle stays indented.
import { createRequire } from 'node:module';

const STAR_CACHE = '__tsshimImportStar';

const STAR_HELPER = /return function\(mod\) \{(\s*)if \(mod && mod\.__esModule\) return mod;(\s*)var result = \{\};/g;

/** Returns the text with every __importStar helper sharing one namespace object per module. */
export function shareImportStar(text) {
  const helpers = (text.match(/__createBinding\d*\(result, mod/g) ?? []).length;
  let patched = 0;
  let out = text.replace(STAR_HELPER, (_m, a, b) => {
    patched++;
    return (
      `return function(mod) {${a}if (mod && mod.__esModule) return mod;` +
      `${b}var result = ${STAR_CACHE}.get(mod);${b}if (result) return result;` +
      `${b}result = {};${b}if (mod !== null && typeof mod === "object") ${STAR_CACHE}.set(mod, result);`
    );
  });
  if (patched !== helpers) throw new Error(`bundle-slim: ${patched} of ${helpers} __importStar helpers recognised`);
  if (!out.startsWith('"use strict";\n')) throw new Error('bundle-slim: the bundle does not start with "use strict"');
  out = out.replace('"use strict";\n', `"use strict";\nvar ${STAR_CACHE} = new WeakMap();\n`);
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

/** Both steps; the second is skipped (with a note) when acorn is missing or the check fails. */
export function slimBundle(text, esbuild, root) {
  const star = shareImportStar(text);
  let acorn;
  try {
    acorn = createRequire(`${root}/package.json`)('acorn');
  } catch {
    return { text: star.text, notes: [`${star.patched} import helpers shared; indentation kept (no acorn)`] };
  }
  const stripped = stripIndentation(star.text, acorn);
  const min = (t) =>
    esbuild.transformSync(t, { minify: true, legalComments: 'none', format: 'cjs', platform: 'node', target: 'node20' })
      .code;
  if (min(stripped.text) !== min(star.text)) {
    return { text: star.text, notes: [`${star.patched} import helpers shared; indentation kept (check failed)`] };
  }
  return {
    text: stripped.text,
    notes: [`${star.patched} import helpers shared, ${stripped.removed} bytes of indentation`],
  };
}
