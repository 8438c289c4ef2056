#!/usr/bin/env node
// Reads text with stack traces of the minified shim (a log, a crash message) and prints it with
// every position in bundle.js mapped through bundle.js.map (scripts/bundle-slim.mjs writes it next
// to the bundle; the shim never loads it) to the compiled file, line, column and the name at that
// place (the function a frame calls):
//
//   node scripts/symbolize.mjs < trace.txt                          the map of this build
//   node scripts/symbolize.mjs /usr/lib/node_modules/tsshim/dist/src/daemon/bundle.js.map < trace.txt
//
// A process started from the V8 snapshot names the snapshot's entry file instead of bundle.js, with
// the bundle's lines and columns: positions in a file named like it (.snapshot-build*) are mapped too.
// `node --enable-source-maps` does not help here: boot.ts compiles the bundle with vm.Script, for
// which Node 20 reads no source map.
import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const POSITION = /([^\s()]*(?:bundle\.js|\.snapshot-build[^\s():]*)):(\d+):(\d+)/g;

/**
 * `text` with every bundle position that `map` (a SourceMap of the bundle) knows replaced; the
 * files it names are resolved against `dir` (the map's directory) when given.
 */
export function symbolize(text, map, dir) {
  return text.replace(POSITION, (whole, _file, line, column) => {
    const e = map.findEntry(Number(line) - 1, Number(column) - 1);
    if (!e || e.originalSource === undefined) return whole;
    const name = e.name ? ` ${e.name}` : '';
    const file = dir ? resolve(dir, e.originalSource) : e.originalSource;
    return `${file}:${e.originalLine + 1}:${e.originalColumn + 1}${name} [${whole}]`;
  });
}

export function loadMap(file) {
  return new SourceMap(JSON.parse(readFileSync(file, 'utf8')));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file =
    process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'daemon', 'bundle.js.map');
  process.stdout.write(symbolize(readFileSync(0, 'utf8'), loadMap(file), dirname(resolve(file))));
}
