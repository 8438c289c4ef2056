// Post-processing of pbjs's static module (src/gen/proto.js): message types, enums and services
// are made when the program first reads them, not when the module loads. pbjs writes each as an
// immediately called function, `ns.Type = (function() { ... return Type; })();`, so loading the
// module made all 130 of them (a constructor, its prototype with the field defaults, encode,
// decode, fromObject, toObject, ... and their maps) in every shim process, though a serving shim
// uses a few dozen (the cgroups metrics types, for one, only in the CLI and tests: the shim
// encodes metrics itself; the diagnostics, upgrade, bootstrap and legacy option types rarely or
// never). Now the property is a getter that runs that function once and puts its result in its
// place as an ordinary property (enumerable, writable, configurable, as the assignment made it;
// the same keys in the same order). Nothing runs at a type's making but its own definitions
// (other types are read inside its functions, when called), so the order of making does not
// matter. Namespaces (`var name = {};`) stay as they are, and so do the types the caller names
// eager (build.mjs: the Task API's, which every RPC's first call would otherwise make and compile).
// Lines stay where they were.

const OPEN = /^(\s*)([A-Za-z_$][\w$]*)\.([A-Za-z_$][\w$]*) = \(function\(\) \{$/;
const ROOT = /^var \$root = .*;$/m;

export const LAZY_HELPER =
  'function $lazy(o, k, make) { var put = function (v) { Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true }); return v; };' +
  ' Object.defineProperty(o, k, { get: function () { return put(make()); }, set: put, enumerable: true, configurable: true }); }';

/**
 * The module's text with its types, enums and services made on first use, but for those whose full
 * name starts with one of `eager` (e.g. 'containerd.task.v2.'); `lazy` counts the others.
 */
export function lazyTypes(text, eager = []) {
  const lines = text.split('\n');
  let lazy = 0;
  const outer = []; // [indent, full name] of the enclosing namespaces and types
  for (let i = 0; i < lines.length; i++) {
    const m = OPEN.exec(lines[i]);
    if (!m) continue;
    const [, indent, owner, name] = m;
    while (outer.length && outer[outer.length - 1][0] >= indent.length) outer.pop();
    const full = owner === '$root' ? name : `${outer.length ? outer[outer.length - 1][1] : owner}.${name}`;
    outer.push([indent.length, full]);
    let j = i + 1;
    while (j < lines.length && /^\s*(\/\*\*|\*|\*\/|$)/.test(lines[j])) j++; // its doc comment
    if (new RegExp(`^\\s*var ${name.replace(/\$/g, '\\$')} = \\{\\};$`).test(lines[j] ?? '')) continue; // a namespace
    if (eager.some((prefix) => full.startsWith(prefix))) continue;
    const close = `${indent}})();`;
    let k = i + 1;
    while (k < lines.length && lines[k] !== close) k++;
    if (k === lines.length) throw new Error(`proto-lazy: no end of ${full} (line ${i + 1})`);
    lines[i] = `${indent}$lazy(${owner}, ${JSON.stringify(name)}, function() {`;
    lines[k] = `${indent}});`;
    lazy++;
  }
  let out = lines.join('\n');
  if (!ROOT.test(out)) throw new Error('proto-lazy: no $root declaration');
  out = out.replace(ROOT, (decl) => `${decl} ${LAZY_HELPER}`);
  return { text: out, lazy };
}
