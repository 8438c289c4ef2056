// The dynamic loader takes an empty or relative entry of LD_LIBRARY_PATH as a directory relative
// to the current one. containerd's opt plugin prepends "<opt>/lib:" to whatever was there, so with
// nothing there every shim inherits an empty last entry: each program a shim runs (runc, a binary
// logger, a spare's node) would first look for its libraries in its working directory, which for
// runc is the container's bundle. A shim has no use for that, and it costs failed opens per exec.

const LIBRARY_PATH_VAR = 'LD_LIBRARY_PATH';

/** The absolute directories of a colon-separated list, in order ('' when none is left). */
export function absoluteDirs(list: string): string {
  return list
    .split(':')
    .filter((dir) => dir.startsWith('/'))
    .join(':');
}

/** Drops the entries of `env`'s LD_LIBRARY_PATH that are not absolute (the variable when none is left). */
export function dropRelativeLibraryDirs(env: NodeJS.ProcessEnv): void {
  const value = env[LIBRARY_PATH_VAR];
  if (value === undefined) return;
  const kept = absoluteDirs(value);
  if (kept === value) return;
  if (kept === '') delete env[LIBRARY_PATH_VAR];
  else env[LIBRARY_PATH_VAR] = kept;
}
