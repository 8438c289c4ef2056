// `tsshim ps`: one line per container held by a running tsshim shim.
import type { InspectReport } from './shim-client';
import { discoverShims, closeAll, type DiscoverOptions } from './discover';
import { formatTable } from './table';
import { humanDuration } from './units';
import type { CliContext } from './io';

export const PS_HEADER = ['NAMESPACE', 'ID', 'PID', 'STATUS', 'UPTIME', 'EXECS', 'SHIM-PID', 'SHIM-VERSION'];

export async function ps(ctx: CliContext, opts: DiscoverOptions & { namespace?: string }): Promise<number> {
  const now = (ctx.now ?? Date.now)();
  const shims = await discoverShims(opts, ctx.env);
  try {
    const rows: string[][] = [];
    for (const shim of shims) {
      // ListResponse has no shim pid or version; Inspect does.
      const info = await shim.client.inspect().catch(() => ({}) as InspectReport);
      const shimPid = String(info.pid ?? '-');
      const shimVersion = info.version ? `${info.version}${info.revision ? ` (${info.revision})` : ''}` : '-';
      for (const c of shim.containers) {
        if (opts.namespace && c.namespace !== opts.namespace) continue;
        const uptime = c.startedAt && c.status !== 'stopped' ? humanDuration(now - c.startedAt.getTime()) : '-';
        rows.push([
          c.namespace,
          c.id,
          String(c.pid || '-'),
          c.status,
          uptime,
          String(c.execCount),
          shimPid,
          shimVersion,
        ]);
      }
    }
    rows.sort((a, b) => a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]));
    ctx.out.write(formatTable(PS_HEADER, rows));
    return 0;
  } finally {
    closeAll(shims);
  }
}
