// This process's open descriptors as /proc shows them: what the introspection service reports by
// kind and what a daemon going back to the spare pool compares with its spare days.
import * as fs from 'node:fs';

/**
 * Each open descriptor and its /proc/self/fd link (socket:[...], pipe:[...], a path); empty without
 * /proc. Another process's with `/proc/<pid>/fd` (the tests' leak checks); gone: empty.
 */
export function ownFds(fdDir = '/proc/self/fd'): Map<number, string> {
  const out = new Map<number, string>();
  let names: string[] = [];
  try {
    names = fs.readdirSync(fdDir);
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      out.set(Number(name), fs.readlinkSync(`${fdDir}/${name}`));
    } catch {
      /* the readdir's own descriptor, or one closed since */
    }
  }
  return out;
}
