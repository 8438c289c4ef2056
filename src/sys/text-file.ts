// Reading a small file whose absence is itself an answer (a pid or lookup file, a /proc table).
import * as fs from 'node:fs';

/** The file's text without surrounding whitespace; null when it cannot be read (missing, gone, not ours). */
export function readTrimmed(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}
