// Decides how a process's output is delivered, from the stdout string (containerd's stdio
// URIs: a FIFO path, file://, binary://, as containerd-shim-runc-v2's pkg/process/io.go reads them).
import * as path from 'node:path';
import type { StdioConfig } from './types';

export type OutputTarget =
  | { kind: 'null' }
  | { kind: 'fifo' } // per-stream paths (FIFOs, or plain files) come from stdioPath()
  | { kind: 'binary'; binary: string; args: string[] }
  | { kind: 'file'; file: string };

export class StdioUriError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StdioUriError';
  }
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

export function isNullIO(cfg: StdioConfig): boolean {
  return cfg.stdin === '' && cfg.stdout === '' && cfg.stderr === '';
}

/** A stream's FIFO/file path: plain path, or `fifo://` prefix stripped. */
export function stdioPath(value: string): string {
  return value.startsWith('fifo://') ? decodeURIComponent(value.slice('fifo://'.length)) : value;
}

export function parseOutputTarget(cfg: StdioConfig): OutputTarget {
  if (isNullIO(cfg)) return { kind: 'null' };
  const m = SCHEME.exec(cfg.stdout);
  const scheme = m ? m[1].toLowerCase() : '';
  switch (scheme) {
    case '':
    case 'fifo':
      if (scheme === 'fifo' && stdioPath(cfg.stdout) === '')
        throw new StdioUriError(`stdout uri ${JSON.stringify(cfg.stdout)} has no path`);
      return { kind: 'fifo' };
    case 'binary': {
      const url = parseUrl(cfg.stdout);
      return { kind: 'binary', binary: absolutePathOf(url, cfg.stdout), args: queryArgs(url) };
    }
    case 'file': {
      const url = parseUrl(cfg.stdout);
      if (url.search !== '')
        throw new StdioUriError(`stdout uri ${JSON.stringify(cfg.stdout)}: file:// takes no query`);
      return { kind: 'file', file: absolutePathOf(url, cfg.stdout) };
    }
    default:
      throw new StdioUriError(`unknown STDIO scheme ${scheme}`);
  }
}

function parseUrl(raw: string): URL {
  try {
    return new URL(raw);
  } catch (err) {
    throw new StdioUriError(`unable to parse stdout uri ${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
}

// `binary://logger/x` would silently run /x with Go's url.Path; demand the three-slash form instead.
function absolutePathOf(url: URL, raw: string): string {
  if (url.host !== '') {
    throw new StdioUriError(
      `stdout uri ${JSON.stringify(raw)}: expected ${url.protocol}///absolute/path, got host ${JSON.stringify(url.host)}`
    );
  }
  let p: string;
  try {
    p = decodeURIComponent(url.pathname);
  } catch {
    throw new StdioUriError(`stdout uri ${JSON.stringify(raw)}: bad percent-encoding in path`);
  }
  if (!p.startsWith('/') || p === '/' || p.endsWith('/')) {
    throw new StdioUriError(`stdout uri ${JSON.stringify(raw)}: needs an absolute file path`);
  }
  return path.normalize(p);
}

// Each query key becomes an argument followed by its first value (Go: map order; ours: URI order).
function queryArgs(url: URL): string[] {
  const args: string[] = [];
  const seen = new Set<string>();
  for (const [key, value] of url.searchParams) {
    if (seen.has(key)) continue;
    seen.add(key);
    args.push(key, value);
  }
  return args;
}
