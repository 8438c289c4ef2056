// Container IO for init and exec processes: picks the mode from the stdio strings.
//
// Usage by the Task service:
//   const io = await createProcessIO(stdio, { id, execId, namespace, ioUid, ioGid, log, spawn });
//   runc create/exec with stdio io.runcStdio() (and --console-socket io.consoleSocketPath if set)
//   await io.afterRuncStarted(); await io.receiveConsole();
//   ... CloseIO -> io.closeStdin(); ResizePty -> io.resize(w, h)
//   on exit: await io.waitDrained(2000) before publishing /tasks/exit; on Delete: await io.close()
import { PipeProcessIO } from './pipe-io';
import { parseOutputTarget } from './stdio-uri';
import { TerminalProcessIO } from './terminal-io';
import type { ProcessIO, ProcessIOOptions, StdioConfig } from './types';

export type { ProcessIO, ProcessIOOptions, StdioConfig, RuncStdio, IoLog, IoLogLevel, SpawnFn } from './types';
export { StdioUriError, parseOutputTarget } from './stdio-uri';
export { LOGGER_TERM_TIMEOUT_MS } from './binary-logger';

export async function createProcessIO(cfg: StdioConfig, opts: ProcessIOOptions): Promise<ProcessIO> {
  const target = parseOutputTarget(cfg);
  if (cfg.terminal) return TerminalProcessIO.create(cfg, target, opts);
  return PipeProcessIO.create(cfg, target, opts);
}

export type { IoState, IoHandover } from './handover';
export { ioFds } from './handover';

/** The IO of a process the previous shim process of an in-place upgrade ran. */
export function adoptProcessIO(state: import('./handover').IoState, opts: ProcessIOOptions): ProcessIO {
  return state.kind === 'terminal' ? TerminalProcessIO.adopt(state, opts) : PipeProcessIO.adopt(state, opts);
}
