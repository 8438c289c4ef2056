// Finding the OCI runtime binary on PATH once, as go-runc's exec.LookPath does, instead of letting
// every spawned child try execve() in each PATH directory in turn (ten failed attempts before
// /usr/sbin/runc with containerd's usual PATH). A binary that vanished is looked up again.
import * as fs from 'node:fs';
import * as path from 'node:path';

const cache = new Map<string, string>();

/** Absolute path of `name` on `pathEnv`, or `name` itself when it has a slash or is not found. */
export function lookPath(name: string, pathEnv: string | undefined): string {
  if (name.includes('/')) return name;
  const key = `${pathEnv ?? ''}\0${name}`;
  const hit = cache.get(key);
  if (hit && isExecutable(hit)) return hit;
  cache.delete(key);
  for (const dir of (pathEnv ?? '').split(':')) {
    const candidate = path.join(dir || '.', name);
    if (!path.isAbsolute(candidate)) continue; // like Go 1.19+: never a binary from the cwd
    if (isExecutable(candidate)) {
      cache.set(key, candidate);
      return candidate;
    }
  }
  return name; // spawn then reports ENOENT, which becomes "runc binary not found"
}

function isExecutable(file: string): boolean {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false; // missing or not ours to run: the next PATH entry is tried
  }
}
