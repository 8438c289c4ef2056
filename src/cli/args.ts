// Minimal argv parsing: `--flag value`, `--flag=value`, boolean flags, positionals.

export interface ParsedArgs {
  flags: Record<string, string | true>;
  positional: string[];
}

/** Wrong command line: printed with the usage text, exit code 2. */
export class UsageError extends Error {}

/** A failure worth a one-line explanation (nothing found, feature off): exit code 1. */
export class CliError extends Error {}

export function parseArgs(argv: string[], booleans: string[] = []): ParsedArgs {
  const flags: Record<string, string | true> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    const m = /^--?([A-Za-z][\w-]*)(?:=(.*))?$/.exec(a);
    if (!m) {
      positional.push(a);
      continue;
    }
    const [, name, inline] = m;
    if (inline !== undefined) flags[name] = inline;
    else if (booleans.includes(name)) flags[name] = true;
    else if (i + 1 < argv.length) flags[name] = argv[++i];
    else throw new UsageError(`flag --${name} needs a value`);
  }
  return { flags, positional };
}

export function flagString(p: ParsedArgs, name: string): string | undefined {
  const v = p.flags[name];
  return typeof v === 'string' ? v : undefined;
}

export function flagNumber(p: ParsedArgs, name: string, fallback: number): number {
  const v = flagString(p, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw new UsageError(`--${name} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}
