// The bundle this process was loaded from (boot.ts records it) and the hook boot.ts installs when it
// loaded the bundle without a usable V8 code cache: calling it writes one. A warm spare calls it
// after its warm-up, when the most functions are compiled.
import * as fs from 'node:fs';

export const CODE_CACHE_HOOK = '__tsshimSaveCodeCache';
/** Where boot.ts (or a V8 startup snapshot, snapshot-build.ts) leaves { file, identity, from } of the bundle. */
export const LOADED_BUNDLE = '__tsshimLoadedBundle';

export function saveCodeCache(): void {
  const hook = (globalThis as Record<string, unknown>)[CODE_CACHE_HOOK];
  if (typeof hook === 'function') hook();
}

/**
 * A file's identity: another file in its place (a rebuild, an `npm install -g` over the package:
 * both write new files, never into the old ones) has another, even with the same size and contents.
 */
export function fileIdentity(st: fs.BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.ctimeNs}`;
}

/** The bundle this process runs, or null when it did not start from one (a plain tsc build). */
export interface LoadedBundle {
  file: string;
  identity: string;
  /** How this process got the bundle's code: read and compiled by boot.ts, or from a V8 startup snapshot. */
  from?: 'bundle' | 'snapshot';
}

export function loadedBundle(): LoadedBundle | null {
  const loaded = (globalThis as Record<string, unknown>)[LOADED_BUNDLE] as LoadedBundle | undefined;
  return loaded ?? null;
}

/**
 * True when the bundle on disk is no longer the one this process runs (or is missing): tsshim was
 * rebuilt or installed anew underneath it. Code loaded from the old files keeps working; what this
 * process would start from them now (a spare, a code cache) belongs to the new install.
 */
export function installChanged(): boolean {
  const loaded = loadedBundle();
  if (!loaded) return false;
  try {
    return fileIdentity(fs.statSync(loaded.file, { bigint: true })) !== loaded.identity;
  } catch {
    return true; // the bundle is gone: "missing" counts as changed (see above)
  }
}
