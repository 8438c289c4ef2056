// Loader of the bundled shim (dist/src/shim/bundle.js, made by scripts/build.mjs) with a V8 code
// cache. Compiling the 1.5 MB bundle costs ~70 ms in every shim process; with cached code it loads
// in ~35 ms, and the tsc output's hundred module files cost more still. The cache depends on the
// node version and V8 flags (the daemon runs with other flags than `start`), so there is one file
// per combination next to the bundle; a cache V8 rejects (or a missing one) is written anew, once.
// Without a bundle (plain tsc build) this runs main.js.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { CODE_CACHE_HOOK } from './code-cache';
import { BUNDLE_NAME } from './entry';

const BUNDLE = path.join(__dirname, BUNDLE_NAME);

export function codeCacheFile(dir: string, version = process.version, execArgv = process.execArgv): string {
  const key = crypto.createHash('sha256').update([version, process.arch, ...execArgv].join('\0')).digest('hex').slice(0, 16);
  return path.join(dir, `.bundle.${key}.v8cache`);
}

function writeAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}`;
  try {
    fs.writeFileSync(tmp, data, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true }); // read-only install: run without a cache
  }
}

function runBundle(source: string): void {
  const cacheFile = codeCacheFile(__dirname);
  let cached: Buffer | undefined;
  try { cached = fs.readFileSync(cacheFile); } catch { /* first run with these flags */ }
  const script = new vm.Script(Module.wrap(source), { filename: BUNDLE, cachedData: cached });
  if (!cached || script.cachedDataRejected) {
    let saved = false;
    const save = (): void => {
      if (saved) return;
      saved = true;
      try { writeAtomic(cacheFile, script.createCachedData()); } catch { /* no cache this time */ }
    };
    (globalThis as Record<string, unknown>)[CODE_CACHE_HOOK] = save;
    // -v and -info run too little of the shim to make a cache worth keeping for `start`.
    if (!process.argv.some((a) => /^--?(v|version|info)$/.test(a))) process.once('exit', save);
  }
  const wrapper = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
  const mod = { exports: {}, filename: BUNDLE, id: BUNDLE, loaded: false };
  wrapper.call(mod.exports, mod.exports, Module.createRequire(BUNDLE), mod, BUNDLE, __dirname);
}

if (require.main === module) {
  let source: string | null = null;
  try { source = fs.readFileSync(BUNDLE, 'utf8'); } catch { /* not bundled */ }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- main runs only when there is no bundle
  if (source === null) require('./main');
  else runBundle(source);
}
