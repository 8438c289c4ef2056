// Container helpers on top of the harness: run detached, remove, find a container's shim.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Containerd } from './harness';
import { getTask } from './containerd-api';
import { argvOf, pidAlive } from './proc';
import { until } from './wait';
import { Client } from '../../src/ttrpc';
import { containerd as api } from '../../src/gen/proto';

export const TASK_SERVICE = 'containerd.task.v2.Task';
const T = api.task.v2;

/**
 * Daemon shims of this containerd serving containers: transient `start` and `delete` runs and
 * idle warm spares (src/shim/spare.ts; a spare that took a container retitles itself) are left out.
 */
export function daemonShims(c: Containerd): number[] {
  return c.shimPids().filter((pid) => {
    const argv = argvOf(pid);
    return !!argv && !argv.includes('start') && !argv.includes('delete') && !argv.includes('spare');
  });
}

/**
 * Idle warm spares of this containerd (the harness's shimPids() leaves them out). A spare's
 * process title is one string, "containerd-shim-tsshim-v2 spare -address <addr>": split on spaces.
 */
export function spareShims(c: Containerd): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const argv = argvOf(Number(name));
    if (!argv || !argv.includes('spare')) continue;
    const i = argv.indexOf('-address');
    if (i >= 0 && argv[i + 1] === c.address) out.push(Number(name));
  }
  return out;
}

/**
 * A shim that left its containers: its process is gone, or (a tsshim daemon that began as a warm
 * spare, src/shim/pool-return.ts) it went back to the spare pool and waits there under the spare's title.
 */
export function shimLeft(pid: number): boolean {
  if (!pidAlive(pid)) return true;
  return !!argvOf(pid)?.includes('spare');
}

/** The pid of the shim serving a container, asked through its socket (joiners of a group get no shim.pid). */
export async function shimPidOf(c: Containerd, id: string): Promise<number> {
  const client = await Client.connect(shimSocketOf(c, id));
  try {
    const reply = await client.call(TASK_SERVICE, 'Connect', T.ConnectRequest.encode({ id }).finish(), {
      timeoutMs: 5000,
      metadata: { 'containerd-namespace-ttrpc': [c.namespace] },
    });
    return T.ConnectResponse.decode(reply).shim_pid;
  } finally {
    client.close();
  }
}

/** The shim's socket path, from the bundle's address file. */
export function shimSocketOf(c: Containerd, id: string): string {
  return fs
    .readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8')
    .trim()
    .replace(/^unix:\/\//, '');
}

export interface RunOptions {
  runtime: string;
  image?: string;
  rootfs?: string;
  extra?: string[];
  env?: string[];
}

/** `ctr run -d`; throws with containerd's log tail when it fails. */
export async function runDetached(c: Containerd, id: string, cmd: string[], o: RunOptions): Promise<number> {
  const args = ['run', '-d', '--runtime', o.runtime, ...(o.extra ?? [])];
  for (const e of o.env ?? []) args.push('--env', e);
  if (o.rootfs) args.push('--rootfs', o.rootfs, id);
  else args.push(o.image!, id);
  const r = await c.ctr([...args, ...cmd], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`ctr run ${id} failed (${r.code}): ${r.stderr}\n${c.logTail(3000)}`);
  return (await getTask(c, id)).pid;
}

/** SIGKILL the task if it runs, wait for STOPPED, delete task and container. */
export async function removeContainer(c: Containerd, id: string): Promise<void> {
  const t = await getTask(c, id).catch(() => null);
  if (t) {
    if (t.status !== 'STOPPED') {
      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
      await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
    }
    const d = await c.ctr(['task', 'delete', id]);
    if (d.code !== 0) throw new Error(`ctr task delete ${id}: ${d.stderr}`);
  }
  const r = await c.ctr(['container', 'delete', id]);
  if (r.code !== 0 && !/not found/.test(r.stderr)) throw new Error(`ctr container delete ${id}: ${r.stderr}`);
}

/**
 * Best-effort removal for cleanup paths: kill, wait (bounded) for STOPPED, delete task and container;
 * quiet when any of it is already done or fails.
 */
export async function removeQuietly(c: Containerd, id: string): Promise<void> {
  await c.ctr(['task', 'kill', '-s', 'KILL', id]);
  await until(async () => {
    try {
      return (await getTask(c, id)).status === 'STOPPED';
    } catch {
      return true;
    }
  }, `${id} stopped`).catch(() => {});
  await c.ctr(['task', 'delete', id]);
  await c.ctr(['container', 'delete', id]);
}
