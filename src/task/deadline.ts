// The deadline containerd sends with a request, turned into options for the runc run behind it.
import type { CallOptions } from '../runc';

/** What the Task service needs of a ttrpc CallContext: containerd's deadline and the cancellation. */
export interface RequestContext {
  deadline?: number;
  signal?: AbortSignal;
}

/**
 * runc gets what is left of containerd's deadline (then the error names the hung binary), and is
 * killed when the request is cancelled (containerd closed the connection). Without a deadline the
 * runc client's default applies (TSSHIM_RUNC_TIMEOUT).
 */
export function runcCallOptions(ctx?: RequestContext): CallOptions {
  if (!ctx) return {};
  const o: CallOptions = { signal: ctx.signal };
  if (ctx.deadline) o.timeoutMs = Math.max(1, ctx.deadline - Date.now());
  return o;
}
