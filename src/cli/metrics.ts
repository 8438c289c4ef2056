// `tsshim metrics <metrics socket|shim socket|id>`: one scrape of a shim's Prometheus endpoint.
import type { InspectReport } from './shim-client';
import { resolveShim, type DiscoverOptions } from './discover';
import { httpGetUnix } from './http';
import { CliError } from './args';
import type { CliContext } from './io';

async function metricsSocketOf(target: string, opts: DiscoverOptions & { namespace?: string }): Promise<string> {
  if (target.endsWith('.metrics.sock')) return target;
  let inspected: InspectReport;
  try {
    const { client } = await resolveShim(target, opts);
    try {
      inspected = await client.inspect();
    } finally {
      client.close();
    }
  } catch (e) {
    // Not a ttrpc shim socket: perhaps a metrics socket with another name.
    if (target.startsWith('/') || target.startsWith('.')) return target;
    throw e;
  }
  if (!inspected.metrics_socket) {
    throw new CliError(
      `shim ${inspected.pid} serves no metrics: start containerd with TSSHIM_METRICS_DIR=<dir> in its environment`
    );
  }
  return inspected.metrics_socket;
}

export async function metrics(
  ctx: CliContext,
  target: string,
  opts: DiscoverOptions & { namespace?: string }
): Promise<number> {
  const socket = await metricsSocketOf(target, opts);
  const res = await httpGetUnix(socket, '/metrics');
  if (res.status !== 200) throw new Error(`GET /metrics on ${socket}: HTTP ${res.status}: ${res.body.trim()}`);
  ctx.out.write(res.body);
  return 0;
}
