// `tsshim inspect <id|socket>`: the shim's Inspect JSON, pretty-printed.
import { resolveShim, type DiscoverOptions } from './discover';
import type { CliContext } from './io';

export async function inspect(
  ctx: CliContext,
  target: string,
  opts: DiscoverOptions & { namespace?: string }
): Promise<number> {
  const { client } = await resolveShim(target, opts);
  try {
    ctx.out.write(JSON.stringify(await client.inspect(), null, 2) + '\n');
    return 0;
  } finally {
    client.close();
  }
}
