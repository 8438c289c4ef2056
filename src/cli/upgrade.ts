// `tsshim upgrade`: every running shim (or those of a namespace, or of named containers)
// re-executes itself in place into the build this command belongs to (README "Upgrading tsshim").
import type { InspectReport } from './shim-client';
import * as os from 'node:os';
import * as path from 'node:path';
import { discoverShims, closeAll, type DiscoverOptions, type FoundShim } from './discover';
import { CliError } from './args';
import { mapLimit } from './limit';
import type { CliContext } from './io';

/** The shim entry of the build this CLI runs from (dist/src/cli -> dist/src/daemon/boot.js). */
export function installedShimEntry(): string {
  return path.join(__dirname, '..', 'daemon', 'boot.js');
}

/**
 * Shims upgraded at once, at most. Each swap pauses one shim's containers (requests wait, output
 * copies stop) while Node loads the new build, which is CPU work: one at a time made a node of many
 * shims wait for each in turn, and all at once would pause every container of the node together.
 * A few at a time, and no more than the CPUs: on 2 cores, 4 swaps at once took as long in all as 2
 * but paused each shim twice as long (past containerd's 2 s limit for a State call on a loaded
 * machine). The node never has all its shims quiescing at once.
 */
export const UPGRADE_CONCURRENCY = 4;

/** Swaps at once on a machine with `cpus` CPUs available to us. */
export function upgradeConcurrency(cpus: number = os.availableParallelism()): number {
  return Math.max(1, Math.min(UPGRADE_CONCURRENCY, cpus));
}

export interface UpgradeOptions extends DiscoverOptions {
  namespace?: string;
  ids: string[];
  check: boolean;
  entry?: string;
  /** Shims in flight at once (default upgradeConcurrency()). */
  concurrency?: number;
}

function label(shim: FoundShim, info: InspectReport): string {
  const held = shim.containers.map((c) => `${c.namespace}/${c.id}`);
  const what = held.length
    ? held.slice(0, 3).join(',') + (held.length > 3 ? `,+${held.length - 3}` : '')
    : `(${info.group ?? 'no containers'})`;
  return `shim ${info.pid ?? '?'} ${what}`;
}

export async function upgrade(ctx: CliContext, opts: UpgradeOptions): Promise<number> {
  const entry = opts.entry ? path.resolve(opts.entry) : installedShimEntry();
  const shims = await discoverShims(opts, ctx.env);
  try {
    const infos = await Promise.all(shims.map((shim) => shim.client.inspect().catch(() => ({}) as InspectReport)));
    const chosen: { shim: FoundShim; info: InspectReport }[] = [];
    shims.forEach((shim, i) => {
      const info = infos[i];
      const inNs =
        !opts.namespace ||
        info.namespace === opts.namespace ||
        shim.containers.some((c) => c.namespace === opts.namespace);
      const named =
        opts.ids.length === 0 ||
        shim.containers.some((c) => opts.ids.includes(c.id) || opts.ids.includes(`${c.namespace}/${c.id}`));
      if (inNs && named) chosen.push({ shim, info });
    });
    if (opts.ids.length) {
      const missing = opts.ids.filter(
        (id) => !chosen.some(({ shim }) => shim.containers.some((c) => c.id === id || `${c.namespace}/${c.id}` === id))
      );
      if (missing.length)
        throw new CliError(`no tsshim shim holds ${missing.map((m) => JSON.stringify(m)).join(', ')}`);
    }
    if (chosen.length === 0) {
      ctx.out.write('no tsshim shim to upgrade\n');
      return 0;
    }
    // A few at a time (upgradeConcurrency); each line is printed in the order of discovery, as
    // soon as it and the lines before it are known.
    const outcomes = await mapLimit(
      chosen,
      opts.concurrency ?? upgradeConcurrency(),
      async ({ shim, info }) => upgradeOne(shim, label(shim, info), entry, opts.check),
      (o) => ctx.out.write(o.line)
    );
    const failed = outcomes.filter((o) => !o.ok).length;
    return failed ? 1 : 0;
  } finally {
    closeAll(shims);
  }
}

async function upgradeOne(
  shim: FoundShim,
  name: string,
  entry: string,
  check: boolean
): Promise<{ ok: boolean; line: string }> {
  try {
    const r = await shim.client.upgrade(entry, check);
    const from = `${r.fromVersion} (${r.fromRevision})`;
    const to = `${r.toVersion}${r.toRevision ? ` (${r.toRevision})` : ''}`;
    if (check)
      return r.wouldUpgrade
        ? { ok: true, line: `${name}: would upgrade ${from} -> ${to}\n` }
        : { ok: false, line: `${name}: cannot upgrade from ${from}: ${r.reason}\n` };
    return r.upgraded
      ? { ok: true, line: `${name}: upgraded ${from} -> ${to}, pid ${r.pid} kept\n` }
      : { ok: false, line: `${name}: not upgraded, still ${from}: ${r.reason}\n` };
  } catch (e) {
    return { ok: false, line: `${name}: upgrade failed: ${(e as Error).message}\n` };
  }
}
