// Leaks: hundreds of run/exec/delete cycles through one long-lived shim (a group shim, then the
// per-node shim) must leave its fds, RSS, children and files flat. Long version:
// test/stress/leak-stress.ts --cycles 2000.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startContainerd, TSSHIM_RUNTIME } from '../support/harness';
import { closeClients } from '../support/containerd-api';
import { formatLeakReport, runLeakScenario } from '../support/leak-scenario';
import { leakProblems } from '../support/leak-checks';

const CYCLES = Number(process.env.TSSHIM_LEAK_CYCLES ?? 300);

for (const mode of ['group', 'per-node'] as const) {
  test(`${mode} shim: ${mode === 'group' ? CYCLES : Math.ceil(CYCLES / 2)} run/exec/delete cycles leave fds, RSS, children and files flat`, async () => {
    const c = await startContainerd({ logLevel: 'info', env: mode === 'per-node' ? { TSSHIM_PER_NODE: '1' } : {} });
    try {
      const cycles = mode === 'group' ? CYCLES : Math.ceil(CYCLES / 2);
      const r = await runLeakScenario(c, {
        runtime: TSSHIM_RUNTIME,
        cycles,
        mode,
        ctrEvery: 25,
        warmup: Math.floor(cycles / 3),
        log: () => {},
      });
      console.log(formatLeakReport(r));
      assert.deepEqual(leakProblems(r), []);
      assert.ok(r.end.fds > 0 && r.end.rss > 0, 'the shim was sampled');
      assert.ok(r.statsServed > cycles, `Stats served (${r.statsServed}): their open cgroup files count among the fds`);
    } finally {
      closeClients(c);
      await c.stop();
    }
  });
}
