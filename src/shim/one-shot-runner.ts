// Runs a command for a short-lived subcommand (`delete`): plain child_process, no reaper. Such a
// process has no container children to reap and exits right after, so it needs neither the
// subreaper bit nor the reaper's libc bindings, whose loading it would pay for on every call.
import { spawn, type StdioOptions } from 'node:child_process';
import { constants } from 'node:os';
import type { RunOptions, RunResult } from '../sys/reaper';
import type { CommandRunner } from '../runc';

const DEFAULT_TIMEOUT_MS = 60_000;

export const oneShotRunner: CommandRunner = {
  run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      // child_process cannot share stdout's pipe: 'stdout' gets a pipe of its own.
      const s = (opts.stdio ?? []).map((x) => (x === 'stdout' ? 'pipe' : x));
      const stdio: StdioOptions = [
        s[0] ?? (opts.input !== undefined ? 'pipe' : 'ignore'),
        s[1] ?? 'pipe',
        s[2] ?? 'pipe',
        ...(opts.extraFds ?? []),
      ];
      const child = spawn(command, args, {
        stdio,
        env: opts.env,
        cwd: opts.cwd,
        signal: opts.signal,
        killSignal: 'SIGKILL',
      });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => stdout.push(b));
      child.stderr?.on('data', (b: Buffer) => stderr.push(b));
      if (opts.input !== undefined) child.stdin?.end(opts.input);
      let failure: Error | null = null;
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              failure = Object.assign(new Error(`${command}: timed out after ${timeoutMs} ms (killed with SIGKILL)`), {
                code: 'ETIMEDOUT',
                timeoutMs,
              });
              child.kill('SIGKILL');
            }, timeoutMs)
          : null;
      // 'error' is a failed spawn (ENOENT, EACCES) or the abort signal; 'close' still follows it.
      child.once('error', (e) => {
        failure ??= e;
      });
      child.once('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        const out = { stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) };
        if (failure) return reject(Object.assign(failure, out));
        const status = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
        resolve({ code: status, signal, ...out, pid: child.pid ?? 0 });
      });
    });
  },
};
