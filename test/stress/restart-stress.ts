// Standalone restart stress: node dist/test/stress/restart-stress.js [--containers 50] [--cycles 10]
//   [--runtime io.containerd.tsshim.v2|io.containerd.runc.v2|both] [--mode single|group|per-node]
//   [--downtime 3000] [--long-downtime 30000] [--long-cycle 2] [--execs 3] [--seed N] [--quiet]
// Runs the scenario of restart-scenario.ts on a private containerd per runtime and prints the
// figures. One cycle (--long-cycle) keeps containerd down for --long-downtime ms: longer than the Go
// shim's ~21 s of retries, so io.containerd.runc.v2 is expected to lose those exit events.
// Exit code 1 when tsshim shows any problem (runc.v2's figures are printed for comparison only).
import { startContainerd, RUNC_RUNTIME, TSSHIM_RUNTIME } from '../support/harness';
import { closeClients } from '../support/containerd-api';
import { formatReport, runRestartScenario, type ScenarioReport, type ShimMode } from '../support/restart-scenario';

interface Args {
  containers: number;
  cycles: number;
  runtimes: string[];
  mode: ShimMode;
  downtime: number;
  longDowntime: number;
  longCycle: number;
  execs: number;
  seed: number;
  quiet: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    containers: 50,
    cycles: 10,
    runtimes: [TSSHIM_RUNTIME],
    mode: 'single',
    downtime: 3000,
    longDowntime: 30_000,
    longCycle: 2,
    execs: 3,
    seed: Date.now() % 1_000_000,
    quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    switch (k) {
      case '--containers':
        a.containers = Number(v());
        break;
      case '--cycles':
        a.cycles = Number(v());
        break;
      case '--runtime': {
        const r = v();
        a.runtimes =
          r === 'both'
            ? [TSSHIM_RUNTIME, RUNC_RUNTIME]
            : r === 'runc'
              ? [RUNC_RUNTIME]
              : r === 'tsshim'
                ? [TSSHIM_RUNTIME]
                : [r];
        break;
      }
      case '--mode':
        a.mode = v() as ShimMode;
        break;
      case '--downtime':
        a.downtime = Number(v());
        break;
      case '--long-downtime':
        a.longDowntime = Number(v());
        break;
      case '--long-cycle':
        a.longCycle = Number(v());
        break;
      case '--execs':
        a.execs = Number(v());
        break;
      case '--seed':
        a.seed = Number(v());
        break;
      case '--quiet':
        a.quiet = true;
        break;
      default:
        throw new Error(`unknown argument ${k}`);
    }
  }
  if (!['single', 'group', 'per-node'].includes(a.mode)) throw new Error(`--mode ${a.mode}: single, group or per-node`);
  return a;
}

async function runOne(runtime: string, a: Args): Promise<ScenarioReport> {
  const perNode = a.mode === 'per-node' && runtime === TSSHIM_RUNTIME;
  const c = await startContainerd({ logLevel: 'info', env: perNode ? { TSSHIM_PER_NODE: '1' } : {} });
  try {
    return await runRestartScenario(c, {
      runtime,
      containers: a.containers,
      cycles: a.cycles,
      execsPerCycle: a.execs,
      seed: a.seed,
      mode: a.mode === 'per-node' && runtime !== TSSHIM_RUNTIME ? 'single' : a.mode,
      downtimeMs: (cycle) => (cycle === a.longCycle ? a.longDowntime : a.downtime),
      eventWaitMs: runtime === TSSHIM_RUNTIME ? 15_000 : 25_000,
      log: (m) => {
        if (!a.quiet) console.log(`[${new Date().toISOString().slice(11, 19)}] ${m}`);
      },
    });
  } finally {
    closeClients(c);
    await c.stop();
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  console.log(
    `restart stress: ${a.containers} containers, ${a.cycles} cycles, downtime ${a.downtime} ms ` +
      `(cycle ${a.longCycle}: ${a.longDowntime} ms), mode ${a.mode}, seed ${a.seed}`
  );
  const reports: ScenarioReport[] = [];
  for (const runtime of a.runtimes) reports.push(await runOne(runtime, a));
  console.log('\n==== results ====');
  for (const r of reports) console.log(formatReport(r));
  const ours = reports.find((r) => r.runtime === TSSHIM_RUNTIME);
  if (ours && ours.problems.length) {
    console.log(`\ntsshim problems:\n  ${ours.problems.join('\n  ')}`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
