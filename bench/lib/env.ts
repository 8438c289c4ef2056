// The benchmark's world: two private containerds (the second with TSSHIM_PER_NODE=1), a busybox
// rootfs, and timed ctr commands.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Containerd, CtrResult } from '../../test/support/harness';
import { PATH_ENV_ARGS } from '../../test/support/rootfs';
import { nowMs } from './stats';
import { logSize } from './containerd-log';

export const RUNC = 'io.containerd.runc.v2';
export const TSSHIM = 'io.containerd.tsshim.v2';
export const SANDBOX_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export type Side = 'runc' | 'tsshim';
export const SIDES: readonly Side[] = ['runc', 'tsshim'];
export const runtimeOf = (s: Side): string => (s === 'runc' ? RUNC : TSSHIM);

export interface BenchEnv {
  quick: boolean;
  /** One shim per container and pod-grouped shims. */
  main: Containerd;
  /** Started with TSSHIM_PER_NODE=1: tsshim serves every container of a namespace from one shim. */
  perNode: Containerd;
  rootfs: string;
  log(msg: string): void;
}

export interface Timed {
  ms: number;
  spawnedAt: number;
  exitedAt: number;
  res: CtrResult;
}

let seq = 0;
/** A containerd id unique within this run. */
export function newId(prefix: string): string {
  seq += 1;
  return `${prefix}-${process.pid.toString(36)}-${seq}`;
}

export async function timedCtr(c: Containerd, args: string[], timeoutMs = 120_000): Promise<Timed> {
  const spawnedAt = nowMs();
  const res = await c.ctr(args, { timeoutMs });
  const exitedAt = nowMs();
  return { ms: exitedAt - spawnedAt, spawnedAt, exitedAt, res };
}

/** Like timedCtr but fails loudly: a benchmark number from a failed command is worthless. */
export async function mustCtr(c: Containerd, args: string[], timeoutMs = 120_000): Promise<Timed> {
  const t = await timedCtr(c, args, timeoutMs);
  if (t.res.code !== 0) {
    throw new Error(
      `ctr ${args.join(' ')} failed (${t.res.code}${t.res.timedOut ? ', timed out' : ''}): ${t.res.stderr.trim()}\n${c.logTail(3000)}`
    );
  }
  return t;
}

/** ctr with its stdout on /dev/null (no pipe through this process). */
export function ctrToDevNull(
  c: Containerd,
  args: string[]
): Promise<{ ms: number; code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const devnull = fs.openSync('/dev/null', 'w');
    const t0 = nowMs();
    const child = spawn('ctr', ['--address', c.address, '--namespace', c.namespace, ...args], {
      stdio: ['ignore', devnull, 'pipe'],
      env: { ...process.env, PATH: `${process.env.PATH}` },
    });
    fs.closeSync(devnull);
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ ms: nowMs() - t0, code, stderr }));
  });
}

export interface RunSpec {
  side: Side;
  annotations?: Record<string, string>;
  extra?: string[];
}

/** `ctr run` arguments for the shared busybox rootfs. */
export function runArgs(env: BenchEnv, spec: RunSpec, flags: string[], id: string, cmd: string[]): string[] {
  const ann = Object.entries(spec.annotations ?? {}).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  return [
    'run',
    ...flags,
    '--runtime',
    runtimeOf(spec.side),
    ...PATH_ENV_ARGS,
    ...ann,
    ...(spec.extra ?? []),
    '--rootfs',
    env.rootfs,
    id,
    ...cmd,
  ];
}

/** Start a detached `sleep` container. */
export async function runSleeper(env: BenchEnv, c: Containerd, spec: RunSpec, id: string): Promise<Timed> {
  return mustCtr(c, runArgs(env, spec, ['-d'], id, ['sleep', '1000000']));
}

/** Kill (SIGKILL), wait until stopped, delete task and container; errors ignored (best effort). */
export async function removeContainer(c: Containerd, id: string): Promise<void> {
  await c.ctr(['task', 'kill', '-s', 'KILL', id]);
  for (let i = 0; i < 100; i++) {
    const r = await c.ctr(['task', 'delete', id]);
    if (r.code === 0 || /not found/.test(r.stderr)) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await c.ctr(['container', 'delete', id]);
}

export function logMark(c: Containerd): number {
  return logSize(c.logFile);
}
