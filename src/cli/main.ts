// `tsshim`: the operator CLI. Finds running tsshim shims and talks to their tsshim.v1.Shim service.
import { parseArgs, flagNumber, flagString, UsageError, CliError, type ParsedArgs } from './args';
import { ps } from './ps';
import { top } from './top';
import { inspect } from './inspect';
import { metrics } from './metrics';
import { exporter } from './exporter';
import { upgrade } from './upgrade';
import type { CliContext } from './io';
import { TtrpcError, Code } from '../ttrpc';

export const USAGE = `usage: tsshim <command> [options]

commands:
  ps                         list containers held by running tsshim shims
  top [id]                   live CPU / memory / pids per container (all when no id)
      --interval <ms>        sampling interval (default 1000)
      --once                 print one table (after two samples) and exit
  inspect <id|socket>        the shim's internal state as JSON
  metrics <id|socket>        scrape the shim's Prometheus endpoint (shim socket, metrics socket or id)
  upgrade [id...]            re-execute running shims in place into this build (all, -n <ns>, or those holding the ids)
      --check                say what would be upgraded, from which version to which
      --entry <path>         the shim entry of another build (default: this build's dist/src/shim/boot.js)
  exporter                   serve every shim's metrics over HTTP for Prometheus (GET /metrics, /healthz)
      --listen <host:port>   default 127.0.0.1:9743; other addresses print a warning (no auth, no TLS)
      --state <dir>          repeatable: one per containerd
      --timeout <ms>         per-shim scrape deadline (default 2000)
      --concurrency <n>      shims scraped at once (default 4)

options for every command:
  --state <dir>              containerd state dir: find shims through <dir>/io.containerd.runtime.v2.task/*/*/address
  --socket-dir <dir>         where to look for shim sockets otherwise (default $TSSHIM_SOCKET_DIR or /run/containerd/s)
  -n, --namespace <ns>       only this containerd namespace

metrics endpoint: start containerd with TSSHIM_METRICS_DIR=<dir> in its environment; each shim then
serves GET /metrics on <dir>/<shim socket name>.metrics.sock.
`;

const BOOLEAN_FLAGS = ['once', 'help', 'h', 'check'];

function discoverOptions(p: ParsedArgs) {
  return {
    state: flagString(p, 'state'),
    socketDir: flagString(p, 'socket-dir'),
    namespace: flagString(p, 'namespace') ?? flagString(p, 'n'),
  };
}

function one(p: ParsedArgs, what: string): string {
  if (p.positional.length !== 2) throw new UsageError(`${p.positional[0]} needs exactly one ${what}`);
  return p.positional[1];
}

export async function run(argv: string[], ctx: CliContext): Promise<number> {
  try {
    const p = parseArgs(argv, BOOLEAN_FLAGS);
    const cmd = p.positional[0];
    // Asked for: usage on stdout, success. No command at all is a usage error (stderr, 2).
    if (p.flags.help || p.flags.h || cmd === 'help') {
      ctx.out.write(USAGE);
      return 0;
    }
    if (!cmd) throw new UsageError('a command is required');
    const opts = discoverOptions(p);
    switch (cmd) {
      case 'ps':
        return await ps(ctx, opts);
      case 'top':
        if (p.positional.length > 2) throw new UsageError('top takes at most one container id');
        return await top(ctx, p.positional[1], {
          ...opts,
          intervalMs: Math.max(20, flagNumber(p, 'interval', 1000)),
          once: !!p.flags.once,
        });
      case 'inspect':
        return await inspect(ctx, one(p, 'container id or socket'), opts);
      case 'metrics':
        return await metrics(ctx, one(p, 'container id or socket'), opts);
      case 'exporter':
        return await exporter(ctx, argv);
      case 'upgrade':
        return await upgrade(ctx, {
          ...opts,
          ids: p.positional.slice(1),
          check: !!p.flags.check,
          entry: flagString(p, 'entry'),
        });
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      ctx.err.write(`tsshim: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    let msg: string;
    if (e instanceof CliError) msg = e.message;
    else if (e instanceof TtrpcError && e.code === Code.UNIMPLEMENTED)
      msg = `not a tsshim shim (it does not serve tsshim.v1.Shim): ${e.message}`;
    else if (e instanceof TtrpcError) msg = `${Code[e.code] ?? e.code}: ${e.message}`;
    else msg = (e as Error)?.message ?? String(e);
    ctx.err.write(`tsshim: ${msg}\n`);
    return 1;
  }
}

/** Entry point for bin/tsshim. */
export function main(): void {
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const ctx: CliContext = {
    out: { write: (s) => process.stdout.write(s), isTTY: process.stdout.isTTY },
    err: { write: (s) => process.stderr.write(s) },
    env: process.env,
    signal: ac.signal,
  };
  // run() turns every error into a message and an exit code: it never rejects.
  void run(process.argv.slice(2), ctx).then((code) => {
    process.exitCode = code;
  });
}

if (require.main === module) main();
