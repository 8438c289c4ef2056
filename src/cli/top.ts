// `tsshim top [--interval ms] [--once] [id]`: live CPU, memory and pids per container from the
// shims' Stats streams. Redraws in place on a terminal; prints plain lines otherwise.
import { discoverShims, resolveShim, type DiscoverOptions } from './discover';
import type { ShimClient } from './shim-client';
import { cpuPercent, usageOf } from './usage';
import { formatTable } from './table';
import { humanBytes, humanPercent } from './units';
import type { CliContext } from './io';
import type { StatsSampleMessage } from '../diag/introspection';

export const TOP_HEADER = ['NAMESPACE', 'ID', 'PID', 'STATUS', 'CPU%', 'MEM', 'LIMIT', 'PIDS', 'INIT-CPU%', 'INIT-RSS'];
const CLEAR = '\x1b[H\x1b[2J';

export interface TopOptions extends DiscoverOptions {
  namespace?: string;
  intervalMs: number;
  once: boolean;
}

interface Row {
  prev: StatsSampleMessage | null;
  cur: StatsSampleMessage;
  samples: number;
}

export function topRow(r: Row): string[] {
  const u = usageOf(r.cur);
  const p = r.prev ? usageOf(r.prev) : null;
  const cpu = r.prev && p ? cpuPercent(p.cpuNs, u.cpuNs, r.prev, r.cur) : null;
  const initCpu =
    r.prev && r.cur.pid === r.prev.pid && r.cur.process_cpu_ns
      ? cpuPercent(r.prev.process_cpu_ns, r.cur.process_cpu_ns, r.prev, r.cur)
      : null;
  return [
    r.cur.namespace || '-',
    r.cur.id,
    String(r.cur.pid || '-'),
    r.cur.status,
    humanPercent(cpu),
    u.memoryBytes === null ? '-' : humanBytes(u.memoryBytes),
    u.memoryLimit === null ? '-' : humanBytes(u.memoryLimit),
    u.pids === null ? '-' : String(u.pids),
    humanPercent(initCpu),
    r.cur.process_rss_bytes ? humanBytes(r.cur.process_rss_bytes) : '-',
  ];
}

export async function top(ctx: CliContext, target: string | undefined, opts: TopOptions): Promise<number> {
  const clients: { client: ShimClient; id: string }[] = [];
  if (target) {
    clients.push(await resolveShim(target, opts));
  } else {
    const shims = await discoverShims(opts, ctx.env);
    for (const s of shims) clients.push({ client: s.client, id: '' });
  }
  if (clients.length === 0) ctx.err.write('tsshim top: no running tsshim shim found\n');
  const rows = new Map<string, Row>();
  const done = new AbortController();
  const stop = () => done.abort();
  ctx.signal.addEventListener('abort', stop, { once: true });
  if (ctx.signal.aborted) stop(); // aborted while the shims were looked up: no event comes any more
  const tty = !!ctx.out.isTTY;
  let headerPrinted = false;

  const visible = () =>
    [...rows.values()]
      .filter((r) => !opts.namespace || r.cur.namespace === opts.namespace)
      .sort((a, b) => a.cur.namespace.localeCompare(b.cur.namespace) || a.cur.id.localeCompare(b.cur.id));
  const render = () => {
    const table = visible().map(topRow);
    if (tty) {
      ctx.out.write(
        CLEAR +
          `tsshim top - ${new Date().toLocaleTimeString()}, ${table.length} container(s), every ${opts.intervalMs} ms\n\n` +
          formatTable(TOP_HEADER, table)
      );
    } else {
      const text = formatTable(TOP_HEADER, table);
      ctx.out.write(headerPrinted ? text.slice(text.indexOf('\n') + 1) : text);
      headerPrinted = true;
    }
  };
  // --once: print as soon as every container has two samples (CPU % needs a delta).
  const complete = () => rows.size > 0 && visible().every((r) => r.samples >= 2);

  const pumps = clients.map(async ({ client, id }) => {
    try {
      for await (const s of client.stats(id, opts.intervalMs)) {
        const key = `${client.socket}|${s.namespace}/${s.id}`;
        const old = rows.get(key);
        rows.set(key, { prev: old?.cur ?? null, cur: s, samples: (old?.samples ?? 0) + 1 });
        if (opts.once && complete()) stop();
        if (done.signal.aborted) break;
      }
    } catch (e) {
      if (!done.signal.aborted) ctx.err.write(`tsshim top: ${client.socket}: ${(e as Error).message}\n`);
    }
  });

  // Redraw every interval; with --once, give up waiting for a second sample after a while.
  const timer = opts.once ? setTimeout(stop, opts.intervalMs * 2 + 3000) : setInterval(render, opts.intervalMs);
  // A stream ends on its own only when its container is gone; stop when all did.
  const allEnded = Promise.all(pumps);
  await Promise.race([allEnded, new Promise((r) => done.signal.addEventListener('abort', r, { once: true }))]);
  clearTimeout(timer);
  clearInterval(timer);
  ctx.signal.removeEventListener('abort', stop);
  for (const c of clients) c.client.close();
  await allEnded;
  if (opts.once) render();
  return 0;
}
