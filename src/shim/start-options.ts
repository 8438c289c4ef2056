// The few runtime options `start` itself needs (stdin: a serialized Any, or nothing).
import type { ShimFlags } from './flags';
import type { StartOptions } from './start';

export function startOptions(stdin: Buffer, _flags: ShimFlags): StartOptions {
  if (process.env.TSSHIM_PER_NODE === '1' && stdin.length === 0) return { perNode: true, shimCgroup: '' };
  if (stdin.length === 0) return { perNode: false, shimCgroup: '' };
  // Loaded only when there are options: the generated protobuf code costs start-up time.
  const { google } = require('../gen/proto');
  const { decodeOptions } = require('../task/options');
  const any = google.protobuf.Any.decode(stdin);
  const o = decodeOptions(any);
  return { perNode: o.perNode || process.env.TSSHIM_PER_NODE === '1', shimCgroup: o.shimCgroup };
}
