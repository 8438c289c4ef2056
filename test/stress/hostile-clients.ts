// Standalone: node dist/test/stress/hostile-clients.js [--scale 1] [--only partial,unread,waits,deep] [--repeat 1]
// Starts a private containerd, runs one tsshim container, then attacks its shim socket as a hostile
// same-uid client would (issue 14) and prints, per attack, the shim's RSS before / at peak / after
// and the longest stall of another connection's State calls. --scale 1 is the sizes
// (50 x 4 MiB partial frames, 500k unread replies, 50k pending Waits, a 4 MiB nested exec spec).
import { startContainerd, uniqueId, TSSHIM_RUNTIME } from '../support/harness';
import { closeClients } from '../support/containerd-api';
import { ensureBusyboxImage } from '../support/rootfs';
import { removeContainer, runDetached, shimPidOf, shimSocketOf } from '../support/containers';
import {
  deepExecSpec,
  formatReport,
  partialFrames,
  pendingWaits,
  runAttack,
  unreadReplies,
  type AttackReport,
  type AttackRun,
  type Target,
} from '../support/hostile-scenarios';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, def: string): string => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def;
  };
  const scale = Number(opt('scale', '1'));
  const only = new Set(opt('only', 'partial,unread,waits,deep').split(','));
  const c = await startContainerd({ logLevel: 'info' });
  const reports: AttackReport[] = [];
  try {
    const image = await ensureBusyboxImage(c);
    const id = uniqueId('hostile');
    await runDetached(c, id, ['sleep', '100000'], { runtime: TSSHIM_RUNTIME, image });
    const target: Target = {
      socket: shimSocketOf(c, id),
      namespace: c.namespace,
      containerId: id,
      shimPid: await shimPidOf(c, id),
    };
    console.log(`shim pid ${target.shimPid}, socket ${target.socket}`);
    const attacks: [string, string, () => Promise<AttackRun>][] = [
      ['partial', 'partial frames', partialFrames(target, Math.round(50 * scale))],
      ['unread', 'unread replies', unreadReplies(target, Math.round(500_000 * scale))],
      ['waits', 'pending Waits', pendingWaits(target, Math.round(50_000 * scale))],
      ['deep', 'deep exec spec (4 MiB)', deepExecSpec(target, Math.round((4 << 20) * Math.min(scale, 1)) - 4096)],
      ['deep', 'deep exec spec (1 MiB)', deepExecSpec(target, (1 << 20) - 4096)],
    ];
    const repeat = Number(opt('repeat', '1'));
    for (const [key, name, attack] of attacks.flatMap((a) => Array.from({ length: repeat }, () => a))) {
      if (!only.has(key)) continue;
      const r = await runAttack(target, name, attack);
      reports.push(r);
      console.log(formatReport(r));
      if (!r.shimAlive) break;
    }
    await removeContainer(c, id).catch((e) => console.log(`cleanup: ${(e as Error).message}`));
  } finally {
    closeClients(c);
    await c.stop();
  }
  console.log('\n==== results ====');
  for (const r of reports) console.log(formatReport(r));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
