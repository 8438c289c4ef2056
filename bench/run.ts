// `npm run bench [-- --quick] [--only run-rm,detached,...] [--out DIR]`: tsshim against
// containerd-shim-runc-v2 in the same private containerds, interleaved. Writes
// bench/results/<date>-<hostname>[-quick].{json,svg,md} and prints the table.
// `upgrade` (live upgrade, tsshim only) runs only when named in --only: not by default, not in --quick.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot, startContainerd, pidAlive, type Containerd } from '../test/support/harness';
import { makeRootfs } from '../test/support/rootfs';
import { closeClients } from '../test/support/containerd-api';
import type { BenchEnv } from './lib/env';
import { removeContainer } from './lib/env';
import { shimDaemons } from './lib/proc';
import { Results } from './lib/results';
import { markdown, svgChart, textTable, type RunInfo } from './lib/report';
import { runRmSuite } from './suites/run-rm';
import { detachedSuite } from './suites/detached';
import { throughputSuite } from './suites/throughput';
import { memorySuite } from './suites/memory';
import { reaperSuite } from './suites/reaper';
import { ttrpcSuite } from './suites/ttrpc';
import { profileSuite } from './suites/profile';
import { coldSuite } from './suites/cold';
import { ttySuite } from './suites/tty';
import { criSuite } from './suites/cri';
import { upgradeSuite } from './suites/upgrade';
import { quietSuite } from './suites/quiet';

const SUITES = [
  'run-rm',
  'detached',
  'throughput',
  'memory',
  'reaper',
  'ttrpc',
  'profile',
  'cold',
  'tty',
  'cri',
  'quiet',
  'upgrade',
] as const;
type SuiteName = (typeof SUITES)[number];
/** Suites that run only when named in --only (never by default nor in --quick): live upgrade (issue 16). */
const OPT_IN: readonly SuiteName[] = ['upgrade'];
const DEFAULT_SUITES = SUITES.filter((s) => !OPT_IN.includes(s));
const USAGE = `usage: run [--quick] [--only ${SUITES.join(',')}] [--out DIR]; default: ${DEFAULT_SUITES.join(',')} (${OPT_IN.join(', ')} only with --only)`;

/** A wrong command line: its message is the answer, no stack trace. */
class UsageError extends Error {}

interface Args {
  quick: boolean;
  only: Set<SuiteName>;
  out: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: new Set(DEFAULT_SUITES), out: path.join(repoRoot(), 'bench', 'results') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a === '--quick') args.quick = true;
    else if (a === '--only') {
      const names = (argv[++i] ?? '').split(',').filter(Boolean);
      for (const n of names)
        if (!(SUITES as readonly string[]).includes(n)) throw new UsageError(`unknown suite ${n}; ${USAGE}`);
      args.only = new Set(names as SuiteName[]);
    } else if (a === '--out') args.out = path.resolve(argv[++i]);
    else throw new UsageError(`unknown argument ${a}; ${USAGE}`);
  }
  return args;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0].trim();
  } catch {
    return `${cmd} unknown`;
  }
}

function revision(repo: string): string {
  try {
    return fs.readFileSync(path.join(repo, 'dist', 'revision.txt'), 'utf8').trim();
  } catch {
    /* not built by scripts/build.mjs */
  }
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: repo, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Stop a containerd and any shim daemon the harness would not recognise (tsshim rewrites its title). */
async function stopAll(c: Containerd): Promise<void> {
  const shims = shimDaemons(c.address);
  closeClients(c);
  await c.stop();
  for (const pid of shims)
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const loadAtStart = os.loadavg()[0];
  const log = (m: string) =>
    process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${m}\n`);
  const repo = repoRoot();
  if (!fs.existsSync(path.join(repo, 'dist', 'src', 'daemon', 'main.js')))
    throw new Error(`tsshim is not built (${repo}/dist): npm run build`);

  const rootfsParent = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-bench-'));
  const rootfs = makeRootfs(rootfsParent);
  log(`starting containerds (one with TSSHIM_PER_NODE=1); shim from ${repo}/dist`);
  const main = await startContainerd({ namespace: 'bench', logLevel: 'debug' });
  const perNode = await startContainerd({ namespace: 'bench', logLevel: 'debug', env: { TSSHIM_PER_NODE: '1' } });
  const env: BenchEnv = { quick: args.quick, main, perNode, rootfs, log };
  const results = new Results();
  let sandboxes: { c: Containerd; id: string }[] = [];
  try {
    let baseline = { runc: 0, tsshim: 0 };
    if (args.only.has('run-rm')) {
      log('suite: ctr run --rm /bin/true');
      const s = await runRmSuite(env, results);
      baseline = s.singleMedianMs;
      sandboxes = s.sandboxes;
      for (const sb of sandboxes) await removeContainer(sb.c, sb.id);
      sandboxes = [];
    }
    if (args.only.has('detached')) {
      log('suite: detached container');
      await detachedSuite(env, results);
    }
    if (args.only.has('throughput')) {
      log('suite: stdout throughput');
      if (!args.only.has('run-rm'))
        results.note('throughput via ctr: run-rm suite skipped, so container life cycle time is not subtracted');
      await throughputSuite(env, results, baseline);
    }
    if (args.only.has('memory')) {
      log('suite: memory');
      await memorySuite(env, results);
    }
    if (args.only.has('reaper')) {
      log('suite: reaper and exec storm');
      await reaperSuite(env, results);
    }
    if (args.only.has('ttrpc')) {
      log('suite: ttrpc');
      await ttrpcSuite(env, results);
    }
    if (args.only.has('profile')) {
      log('suite: start-up profile');
      await profileSuite(env, results);
    }
    if (args.only.has('cold')) {
      log('suite: cold path (spares off) and warm spare');
      await coldSuite(env, results);
    }
    if (args.only.has('tty')) {
      log('suite: tty output');
      await ttySuite(env, results);
    }
    if (args.only.has('cri')) {
      log('suite: CRI through the cri plugin');
      await criSuite(env, results);
    }
    if (args.only.has('quiet')) {
      log("suite: Stats at the kubelet's pace");
      await quietSuite(env, results);
    }
    if (args.only.has('upgrade')) {
      log('suite: live upgrade (tsshim only)');
      await upgradeSuite(env, results);
    }
  } finally {
    for (const sb of sandboxes) await removeContainer(sb.c, sb.id).catch(() => undefined);
    await stopAll(main);
    await stopAll(perNode);
    fs.rmSync(rootfsParent, { recursive: true, force: true });
  }

  const now = new Date();
  const info: RunInfo = {
    date: now.toISOString().slice(0, 10),
    host: os.hostname(),
    quick: args.quick,
    node: process.version,
    containerd: firstLine('containerd', ['--version']).replace(
      /^containerd github.com\/containerd\/containerd /,
      'containerd '
    ),
    runc: firstLine('runc', ['--version']),
    revision: revision(repo),
    cpus: os.cpus().length,
    durationS: (Date.now() - started) / 1000,
    load: [loadAtStart, os.loadavg()[0]],
  };
  const base = `${info.date}-${info.host}${args.quick ? '-quick' : ''}`;
  fs.mkdirSync(args.out, { recursive: true });
  const title = `tsshim / runc.v2, ${info.date} ${info.host}${args.quick ? ' (quick)' : ''}, rev ${info.revision}, load ${info.load[0].toFixed(1)}-${info.load[1].toFixed(1)}`;
  fs.writeFileSync(
    path.join(args.out, `${base}.json`),
    JSON.stringify({ info, rows: results.rows, notes: results.notes, extra: results.extra }, null, 1) + '\n'
  );
  fs.writeFileSync(path.join(args.out, `${base}.svg`), svgChart(results, title));
  fs.writeFileSync(path.join(args.out, `${base}.md`), markdown(results, info, `${base}.svg`));
  process.stdout.write(`${title}\n\n${textTable(results)}\n`);
  for (const n of results.notes) process.stdout.write(`note: ${n}\n`);
  process.stdout.write(`\nwritten: ${path.join(args.out, base)}.{json,svg,md}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(
      err instanceof UsageError ? `bench: ${err.message}\n` : `bench failed: ${err?.stack ?? err}\n`
    );
    process.exit(1);
  }
);
