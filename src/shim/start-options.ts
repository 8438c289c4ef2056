// The few runtime options `start` itself needs (stdin: a serialized Any, or nothing). The one
// decoder for every way a shim starts: Node `start` (main.ts) and a claimed warm spare (spare.ts)
// both call startOptions, so every options type task/options.ts knows (containerd.runc.v1.Options,
// runtimeoptions.v1.Options, the legacy containerd.linux.runc.CreateOptions/RuncOptions) counts.
import type { ShimFlags } from './flags';
import type { StartOptions } from './start';
import type { ShimConfig } from './config';

export function startOptions(stdin: Buffer, _flags: ShimFlags, config: ShimConfig): StartOptions {
  if (config.perNode && stdin.length === 0) return { perNode: true, shimCgroup: '' };
  if (stdin.length === 0) return { perNode: false, shimCgroup: '' };
  // Loaded only when there are options: the generated protobuf code costs start-up time.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { google } = require('../gen/proto');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { decodeOptions } = require('../task/options');
  const any = google.protobuf.Any.decode(stdin);
  const o = decodeOptions(any);
  return { perNode: o.perNode || config.perNode, shimCgroup: o.shimCgroup };
}
