// runc writes the container pid (decimal, no newline) to --pid-file before create/exec/restore return.
// Read synchronously: a few bytes in the bundle, where a promise read costs four threadpool trips.
import * as fs from 'node:fs';

export interface ReadPidFileOptions {
  /** Attempts before giving up (default 10). */
  attempts?: number;
  /** Pause between attempts in ms (default 20). */
  intervalMs?: number;
}

/**
 * Reads a runc pid file. Retries a few times when the file is missing, empty or not yet a number
 * (another writer may be mid-write on a slow disk); then fails with the last reason.
 */
export async function readPidFile(path: string, opts: ReadPidFileOptions = {}): Promise<number> {
  const attempts = Math.max(1, opts.attempts ?? 10);
  const intervalMs = opts.intervalMs ?? 20;
  let reason = '';
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await new Promise((res) => setTimeout(res, intervalMs));
    let text: string;
    try {
      text = fs.readFileSync(path, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      reason = err.code === 'ENOENT' ? `open ${path}: no such file or directory` : `read ${path}: ${err.message}`;
      if (err.code !== 'ENOENT') break;
      continue;
    }
    const t = text.trim();
    if (/^\d+$/.test(t) && Number(t) > 0) return Number(t);
    reason =
      t === '' ? `pid file ${path} is empty` : `pid file ${path} holds ${JSON.stringify(t.slice(0, 32))}, not a pid`;
  }
  throw Object.assign(new Error(reason), { code: 'EPIDFILE' });
}
