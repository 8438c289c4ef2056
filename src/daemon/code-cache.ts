// The hook boot.ts installs when it loaded the bundle without a usable V8 code cache: calling it
// writes one. A warm spare calls it after its warm-up, when the most functions are compiled.
export const CODE_CACHE_HOOK = '__tsshimSaveCodeCache';

export function saveCodeCache(): void {
  const hook = (globalThis as Record<string, unknown>)[CODE_CACHE_HOOK];
  if (typeof hook === 'function') hook();
}
