// `tsshim upgrade`: every running shim (or those of a namespace, or of named containers)
// re-executes itself in place into the build this command belongs to (README "Upgrading tsshim").
import * as path from 'node:path';
import { discoverShims, closeAll, type DiscoverOptions, type FoundShim } from './discover';
import { CliError } from './args';
import type { CliContext } from './io';

/** The shim entry of the build this CLI runs from (dist/src/cli -> dist/src/daemon/boot.js). */
export function installedShimEntry(): string {
  return path.join(__dirname, '..', 'daemon', 'boot.js');
}

export interface UpgradeOptions extends DiscoverOptions {
  namespace?: string;
  ids: string[];
  check: boolean;
  entry?: string;
}

function label(shim: FoundShim, info: Record<string, any>): string {
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
    const chosen: { shim: FoundShim; info: Record<string, any> }[] = [];
    for (const shim of shims) {
      const info = await shim.client.inspect().catch(() => ({}) as Record<string, any>);
      const inNs =
        !opts.namespace ||
        info.namespace === opts.namespace ||
        shim.containers.some((c) => c.namespace === opts.namespace);
      const named =
        opts.ids.length === 0 ||
        shim.containers.some((c) => opts.ids.includes(c.id) || opts.ids.includes(`${c.namespace}/${c.id}`));
      if (inNs && named) chosen.push({ shim, info });
    }
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
    let failed = 0;
    // One at a time: each quiesces its containers for a moment; the node never has them all paused.
    for (const { shim, info } of chosen) {
      const name = label(shim, info);
      try {
        const r = await shim.client.upgrade(entry, opts.check);
        const from = `${r.fromVersion} (${r.fromRevision})`;
        const to = `${r.toVersion}${r.toRevision ? ` (${r.toRevision})` : ''}`;
        if (opts.check) {
          if (r.wouldUpgrade) ctx.out.write(`${name}: would upgrade ${from} -> ${to}\n`);
          else {
            failed++;
            ctx.out.write(`${name}: cannot upgrade from ${from}: ${r.reason}\n`);
          }
        } else if (r.upgraded) {
          ctx.out.write(`${name}: upgraded ${from} -> ${to}, pid ${r.pid} kept\n`);
        } else {
          failed++;
          ctx.out.write(`${name}: not upgraded, still ${from}: ${r.reason}\n`);
        }
      } catch (e) {
        failed++;
        ctx.out.write(`${name}: upgrade failed: ${(e as Error).message}\n`);
      }
    }
    return failed ? 1 : 0;
  } finally {
    closeAll(shims);
  }
}
