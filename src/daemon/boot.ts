// Loader of the bundled shim (dist/src/daemon/bundle.js, made by scripts/build.mjs) with a V8 code
// cache. Compiling the 1.5 MB bundle costs ~70 ms in every shim process; with cached code it loads
// in ~35 ms, and the tsc output's hundred module files cost more still. The cache depends on the
// node version and V8 flags (the daemon runs with other flags than `start`), so there is one file
// per combination next to the bundle; a cache V8 rejects (or a missing one) is written anew, once.
// The bundle file's identity is part of the cache's name: V8 checks a cache against the source's
// length only, so the cache of another build of the same length would be taken (its functions run
// instead of the new ones). A shim still running an old install writes its cache under the old
// identity, which the new files never read. Without a bundle (plain tsc build) this runs main.js.
import { isAscii } from 'node:buffer';
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { CODE_CACHE_HOOK, LOADED_BUNDLE, fileIdentity, installChanged } from './code-cache';
import { BUNDLE_NAME } from './entry';
import { sha256Hex } from '../sys/sha256';

const BUNDLE = path.join(__dirname, BUNDLE_NAME);

export function codeCacheFile(
  dir: string,
  bundleIdentity: string,
  version = process.version,
  execArgv = process.execArgv
): string {
  const key = sha256Hex([version, process.arch, bundleIdentity, ...execArgv].join('\0')).slice(0, 16);
  return path.join(dir, `.bundle.${key}.v8cache`);
}

/**
 * The bundle's text. esbuild writes ASCII only (it escapes everything else), and an ASCII file is
 * its own latin1 text: decoding 1.1 MB as latin1 costs a fresh process ~9 ms, as UTF-8 ~13-25 ms
 * (the same string: V8 checks a code cache against it). Anything else is decoded as UTF-8.
 */
export function bundleText(bytes: Buffer): string {
  return bytes.toString(isAscii(bytes) ? 'latin1' : 'utf8');
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

function runBundle(source: string, identity: string): void {
  (globalThis as Record<string, unknown>)[LOADED_BUNDLE] = { file: BUNDLE, identity, from: 'bundle' };
  const cacheFile = codeCacheFile(__dirname, identity);
  let cached: Buffer | undefined;
  try {
    cached = fs.readFileSync(cacheFile);
  } catch {
    /* first run with these flags */
  }
  const script = new vm.Script(Module.wrap(source), { filename: BUNDLE, cachedData: cached });
  if (!cached || script.cachedDataRejected) {
    let saved = false;
    const save = (): void => {
      if (saved || installChanged()) return; // another install's dir now: its shims write their own
      saved = true;
      try {
        writeAtomic(cacheFile, script.createCachedData());
      } catch {
        /* no cache this time */
      }
    };
    (globalThis as Record<string, unknown>)[CODE_CACHE_HOOK] = save;
    // -v and -info run too little of the shim to make a cache worth keeping for `start`.
    if (!process.argv.some((a) => /^--?(v|version|info)$/.test(a))) process.once('exit', save);
  }
  const wrapper = script.runInThisContext() as (
    exports: object,
    require: NodeJS.Require,
    module: object,
    filename: string,
    dirname: string
  ) => void;
  const mod = { exports: {}, filename: BUNDLE, id: BUNDLE, loaded: false };
  wrapper.call(mod.exports, mod.exports, Module.createRequire(BUNDLE), mod, BUNDLE, __dirname);
}

if (require.main === module) {
  // Identity and text from one open file: an install replacing it meanwhile cannot mix the two.
  let fd = -1;
  try {
    fd = fs.openSync(BUNDLE, 'r');
  } catch {
    /* not bundled */
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- main runs only when there is no bundle
  if (fd < 0) require('./main');
  else {
    const identity = fileIdentity(fs.fstatSync(fd, { bigint: true }));
    const source = bundleText(fs.readFileSync(fd));
    fs.closeSync(fd);
    runBundle(source, identity);
  }
}
