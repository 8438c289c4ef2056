// Standalone leak stress: node dist/test/stress/leak-stress.js [--cycles 2000] [--mode group|per-node]
//   [--runtime io.containerd.tsshim.v2|io.containerd.runc.v2|both] [--ctr-every 20] [--warmup 100]
// One long-lived container keeps one shim alive while --cycles run/exec/delete cycles go through it;
// prints the shim's fds, RSS, children and leftovers at start, after warm-up and at the end.
// Exit code 1 when tsshim's figures are not flat (runc.v2's are printed for comparison).
import { startContainerd, RUNC_RUNTIME, TSSHIM_RUNTIME } from '../support/harness';
import { closeClients } from '../support/containerd-api';
import { formatLeakReport, runLeakScenario, type LeakReport } from '../support/leak-scenario';
import { leakProblems } from '../support/leak-checks';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, def: string): string => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def;
  };
  const cycles = Number(opt('cycles', '2000'));
  const mode = opt('mode', 'group') as 'group' | 'per-node';
  const rt = opt('runtime', TSSHIM_RUNTIME);
  const runtimes =
    rt === 'both'
      ? [TSSHIM_RUNTIME, RUNC_RUNTIME]
      : rt === 'runc'
        ? [RUNC_RUNTIME]
        : rt === 'tsshim'
          ? [TSSHIM_RUNTIME]
          : [rt];
  const reports: LeakReport[] = [];
  for (const runtime of runtimes) {
    const perNode = mode === 'per-node' && runtime === TSSHIM_RUNTIME;
    const c = await startContainerd({ logLevel: 'info', env: perNode ? { TSSHIM_PER_NODE: '1' } : {} });
    try {
      const r = await runLeakScenario(c, {
        runtime,
        cycles,
        mode: perNode ? 'per-node' : 'group',
        ctrEvery: Number(opt('ctr-every', '20')),
        warmup: Number(opt('warmup', String(Math.min(100, Math.floor(cycles / 5))))),
        log: (m) => console.log(`[${runtime.split('.')[2]}] ${m}`),
      });
      reports.push(r);
      console.log(formatLeakReport(r));
    } finally {
      closeClients(c);
      await c.stop();
    }
  }
  console.log('\n==== results ====');
  for (const r of reports) console.log(formatLeakReport(r));
  const ours = reports.find((r) => r.runtime === TSSHIM_RUNTIME);
  const problems = ours ? leakProblems(ours) : [];
  if (problems.length) {
    console.log(`\ntsshim problems:\n  ${problems.join('\n  ')}`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
