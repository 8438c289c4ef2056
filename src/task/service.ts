// The Task service: containers by (namespace, id), operations on one process run one at a time
// (Process.operations), ordering of events against exits, and the answers containerd expects.
// RPC decoding and the status codes live in rpc.ts; runc work and state transitions in container.ts.
import * as path from 'node:path';
import type { Exit } from '../sys/reaper';
import type { ExitSource, ProcessRunner } from './ports';
import { DEFAULT_RUNC_TIMEOUT_MS } from '../runc/timeouts';
import type { Logger } from '../sys/logger';
import { isValidIdentifier } from '../sys/identifiers';
import { Container, type CheckpointOptions } from './container';
import { ExecProcess, type Process } from './process';
import { TaskEvents } from './events';
import { now, timestamp } from './timestamps';
import { containerNotCreated, invalidArgument, notFound, unknown, errorMessage, alreadyExists } from './errors';
import { decodeOptions, KNOWN_OPTION_TYPES, type RuntimeOptions } from './options';
import { parseSpecJson, PROCESS_SPEC_LIMITS } from './spec-json';
import { writeInitExit } from './bundle-files';
import type { RequestContext } from './deadline';
import type { StdioConfig } from './io';
import type { MountSpec } from './rootfs';
import {
  cgroupForPid,
  collectEncodedMetrics,
  CgroupNotFoundError,
  OomWatcher,
  releaseCgroupFiles,
  type CgroupHandle,
  type OomWatchHandover,
} from './cgroups';

/** A container's OOM watch as it crosses an in-place upgrade, with the cgroup it watches. */
export interface OomHandover {
  cgroup: CgroupHandle;
  watch: OomWatchHandover;
}

export const STATUS = { UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4, PAUSING: 5 } as const;

export interface CreateInput {
  namespace: string;
  id: string;
  bundle: string;
  rootfs: MountSpec[];
  stdio: StdioConfig;
  checkpoint: string;
  parentCheckpoint: string;
  options: { type_url?: string | null; value?: Uint8Array | null } | null;
}

export interface ServiceDeps {
  events: TaskEvents;
  /** Exit statuses of the shim's children (the reaper). */
  exits: ExitSource;
  /** Runs runc and the logging binaries so that their exit status is not taken from them (the reaper). */
  runner: ProcessRunner;
  /** Deadline of a runc run when containerd sends none (default DEFAULT_RUNC_TIMEOUT_MS). */
  runcTimeoutMs?: number;
  log: Logger;
  shimPid: number;
  /** Called after Shutdown when no container is left. */
  onEmpty: () => void;
  /** Called when a Create failed or was abandoned and left the shim without containers. */
  onIdle?: (reason: string) => void;
  /** Makes the OOM monitor, handed the callback for a container key; default: the cgroups OomWatcher. */
  oomMonitor?: (onOom: (key: string) => void) => OomMonitor;
}

/** Watches containers' cgroups for OOM kills (the cgroups OomWatcher; tests hand in a fake). */
export type OomMonitor = Pick<OomWatcher, 'add' | 'remove' | 'flush' | 'settled' | 'close' | 'handover'>;

interface Running {
  container: Container;
  process: Process;
}

export class TaskService {
  private containers = new Map<string, Container>();
  private cgroups = new Map<Container, CgroupHandle>();
  private running = new Map<number, Running>();
  private exitBuffers = new Set<Exit[]>();
  /** Containers whose Create is still running: reserved, but not visible to other calls yet (as in Go). */
  private creating = new Set<string>();
  private oom: OomMonitor;
  private readonly unsubscribeExits: () => void;
  readonly counters = { reaped: 0, exitsPublished: 0 };

  constructor(private deps: ServiceDeps) {
    this.unsubscribeExits = deps.exits.subscribe((e) => this.onExit(e));
    const onOom = (key: string) => {
      const c = this.containers.get(key);
      if (c) deps.events.oom(c.namespace, c.id);
    };
    this.oom = deps.oomMonitor
      ? deps.oomMonitor(onOom)
      : new OomWatcher(onOom, { log: (level, msg, fields) => deps.log[level](msg, fields) });
  }

  private key(ns: string, id: string): string {
    return `${ns}/${id}`;
  }

  get size(): number {
    return this.containers.size;
  }
  /** Whether any Create ever reached this shim. */
  everCreated = false;
  /** containerd called Shutdown and no Create came since: the shim goes once it holds nothing. */
  shutdownRequested = false;
  list(): Container[] {
    return [...this.containers.values()];
  }

  container(ns: string, id: string): Container {
    const key = this.key(ns, id);
    const c = this.containers.get(key);
    if (!c || this.creating.has(key)) throw containerNotCreated();
    return c;
  }

  // ---- exits -------------------------------------------------------------------------------

  private onExit(e: Exit): void {
    this.counters.reaped++;
    for (const b of this.exitBuffers) b.push(e);
    const r = this.running.get(e.pid);
    if (!r) return; // runc helpers, re-parented grandchildren: reaped and ignored
    this.running.delete(e.pid);
    void this.handleExit(r.container, r.process, e.status);
  }

  /** Runs fn while recording every exit, so a process that dies before its pid is known is not lost. */
  private async recordingExits<T>(fn: () => Promise<T>): Promise<{ result: T; exits: Exit[] }> {
    const exits: Exit[] = [];
    this.exitBuffers.add(exits);
    try {
      return { result: await fn(), exits };
    } finally {
      this.exitBuffers.delete(exits);
    }
  }

  /**
   * After a start event was queued (or the start failed): either the process already died, or
   * watch its pid from now on. A process whose exit was handled already is not watched again.
   */
  private track(c: Container, p: Process, exits: Exit[]): void {
    if (p.reaped !== null) return;
    const early = exits.find((e) => e.pid === p.pid);
    if (early) void this.handleExit(c, p, early.status);
    else this.running.set(p.pid, { container: c, process: p });
  }

  private async handleExit(c: Container, p: Process, status: number): Promise<void> {
    // Stopped from this moment (State, Kill), though the exit event may wait for IO and ordering below.
    p.markReaped(status);
    if (p.isInit) this.persistExit(c, status);
    // Mostly there is nothing to wait for: publish in this turn. An init that died during runc start
    // then has its exit right behind /tasks/start, as with the Go shim, and not after the work of
    // the Start reply, which the awaits below would let run first.
    if (this.exitIsReady(c, p)) {
      this.publishExit(c, p, status);
      return;
    }
    if (p.isInit) {
      await c.initReaped();
      await c.execsDone();
      await this.checkOom(c);
    }
    await c.drained(p);
    this.publishExit(c, p, status);
  }

  /** Whether nothing the exit must follow is pending: the rest of the container, an OOM, output. */
  private exitIsReady(c: Container, p: Process): boolean {
    if (p.isInit && !(c.initExitNeedsNothing() && this.oom.settled(this.key(c.namespace, c.id)))) return false;
    return p.io?.outputDrained() ?? true;
  }

  private publishExit(c: Container, p: Process, status: number): void {
    const { events, log } = this.deps;
    const t = now();
    p.setExited(status, t.at, t.nanos);
    c.processExited(p);
    if (p.isInit) this.oom.remove(this.key(c.namespace, c.id));
    events.exit(c.namespace, c.id, p.id, p.pid, p.exit!);
    this.counters.exitsPublished++;
    log.debug('process exited', { id: c.id, exec: p.execId || undefined, pid: p.pid, status });
  }

  /** cgroup v1 reports OOM through an eventfd that may be read after the exit: look now. */
  private async checkOom(c: Container): Promise<void> {
    await this.oom.flush(this.key(c.namespace, c.id));
  }

  private persistExit(c: Container, status: number): void {
    try {
      writeInitExit(c.bundle, { pid: c.init.pid, status, at: Date.now() });
    } catch (e) {
      this.deps.log.warn('cannot persist exit status', { id: c.id, error: e });
    }
  }

  // ---- Task API ----------------------------------------------------------------------------

  async create(req: CreateInput, ctx?: RequestContext): Promise<number> {
    if (!isValidIdentifier(req.id)) throw invalidArgument(`invalid container id ${JSON.stringify(req.id)}`);
    if (!path.isAbsolute(req.bundle) || path.normalize(req.bundle) !== req.bundle.replace(/\/+$/, '')) {
      throw invalidArgument(`bundle path must be absolute and clean: ${JSON.stringify(req.bundle)}`);
    }
    const key = this.key(req.namespace, req.id);
    if (this.containers.has(key)) throw alreadyExists(`container ${req.id}`);
    this.everCreated = true;
    this.shutdownRequested = false;
    const options: RuntimeOptions = decodeOptions(req.options);
    const typeUrl = req.options?.type_url ?? '';
    if (typeUrl && !KNOWN_OPTION_TYPES.includes(typeUrl.replace(/^.*\//, ''))) {
      this.deps.log.warn('unknown runtime options type ignored', { id: req.id, type: typeUrl });
    }
    const log = this.deps.log.with({ id: req.id, namespace: req.namespace });
    const c = new Container({
      id: req.id,
      namespace: req.namespace,
      bundle: req.bundle,
      rootfs: req.rootfs,
      stdio: req.stdio,
      checkpoint: req.checkpoint,
      parentCheckpoint: req.parentCheckpoint,
      options,
      log,
      runner: this.deps.runner,
      runcTimeoutMs: this.deps.runcTimeoutMs ?? DEFAULT_RUNC_TIMEOUT_MS,
    });
    // Reserve the id while runc works, so a duplicate Create cannot race in.
    this.containers.set(key, c);
    this.creating.add(key);
    let exits: Exit[];
    try {
      ({ exits } = await this.recordingExits(() => c.create(ctx)));
    } catch (e) {
      this.containers.delete(key);
      if (this.containers.size === 0) this.deps.onIdle?.('create failed');
      throw e;
    } finally {
      this.creating.delete(key);
    }
    this.watchCgroup(c);
    this.deps.events.create(req.namespace, {
      container_id: req.id,
      bundle: req.bundle,
      rootfs: req.rootfs,
      io: { stdin: req.stdio.stdin, stdout: req.stdio.stdout, stderr: req.stdio.stderr, terminal: req.stdio.terminal },
      checkpoint: req.checkpoint,
      pid: c.init.pid,
    });
    if (c.init.pid) this.track(c, c.init, exits);
    return c.init.pid;
  }

  /** Watches the container's cgroup (stats, OOM) once its init pid is known. */
  private watchCgroup(c: Container): void {
    if (!c.init.pid || this.cgroups.has(c)) return;
    const cg = cgroupForPid(c.init.pid);
    if (!cg) return;
    this.cgroups.set(c, cg);
    this.oom
      .add(this.key(c.namespace, c.id), cg)
      .catch((e: unknown) => c.cfg.log.warn('cannot watch for OOM', { error: e }));
  }

  async start(ns: string, id: string, execId: string, ctx?: RequestContext): Promise<number> {
    const c = this.container(ns, id);
    const p = c.process(execId);
    return p.operations.run(
      () => (p instanceof ExecProcess ? this.startExec(c, p, ctx) : this.startInit(c, ctx)),
      ctx?.signal
    );
  }

  private async startExec(c: Container, p: ExecProcess, ctx?: RequestContext): Promise<number> {
    // Counted before runc runs: an init exit meanwhile waits for this exec's exit (containerd 1.7+ order).
    const counted = p.state === 'created' && c.init.exit === null;
    if (counted) c.execStarted();
    let exits: Exit[];
    try {
      ({ exits } = await this.recordingExits(() => c.startExec(p, ctx)));
    } catch (e) {
      if (counted) c.execExited();
      // A start that never ran releases Wait (Go closes waitBlock when runc exec fails); a refused
      // second Start of a running exec must not.
      if (p.state === 'created') p.releaseWaiters();
      throw e;
    }
    this.deps.events.execStarted(c.namespace, c.id, p.execId, p.pid);
    this.track(c, p, exits);
    return p.pid;
  }

  private async startInit(c: Container, ctx?: RequestContext): Promise<number> {
    // Exits of the init during runc start must come after /tasks/start: stop watching the pid here,
    // the exits are recorded meanwhile and handed over by track().
    this.running.delete(c.init.pid);
    const exits: Exit[] = [];
    this.exitBuffers.add(exits);
    try {
      await c.startInit(ctx);
      this.watchCgroup(c);
      this.deps.events.start(c.namespace, c.id, c.init.pid);
    } finally {
      this.exitBuffers.delete(exits);
      // Also after a failed start: an exit recorded meanwhile is published, or the pid watched again.
      if (c.init.pid) this.track(c, c.init, exits);
    }
    return c.init.pid;
  }

  async delete(
    ns: string,
    id: string,
    execId: string,
    ctx?: RequestContext
  ): Promise<{ pid: number; exit: Process['exit']; bundle?: string }> {
    const c = this.container(ns, id);
    const p = c.process(execId);
    if (p instanceof ExecProcess) {
      await p.operations.run(() => c.deleteExec(p), ctx?.signal);
      return { pid: p.pid, exit: p.exit };
    }
    await c.init.operations.run(() => c.deleteInit(ctx), ctx?.signal);
    this.running.delete(c.init.pid);
    this.oom.remove(this.key(ns, id));
    releaseCgroupFiles(this.cgroups.get(c)); // Stats keeps them open
    this.cgroups.delete(c);
    this.containers.delete(this.key(ns, id));
    this.deps.events.delete(ns, id, c.init.pid, c.init.exit);
    return { pid: c.init.pid, exit: c.init.exit, bundle: c.bundle };
  }

  state(ns: string, id: string, execId: string) {
    const c = this.container(ns, id);
    const p = c.process(execId);
    const init = c.init;
    let status: number;
    if (init.pausing) status = STATUS.PAUSING;
    else if (p instanceof ExecProcess) {
      status =
        init.state === 'paused'
          ? STATUS.PAUSED
          : p.state === 'created'
            ? STATUS.CREATED
            : p.state === 'running' && p.reaped === null
              ? STATUS.RUNNING
              : STATUS.STOPPED;
    } else {
      status = (
        {
          created: STATUS.CREATED,
          'created-checkpoint': STATUS.CREATED,
          running: STATUS.RUNNING,
          paused: STATUS.PAUSED,
          stopped: STATUS.STOPPED,
          deleted: STATUS.STOPPED,
        } as const
      )[init.state];
    }
    // An exec is stopped once reaped; its exit is published later (IO drain, ordering).
    const exit = p.exit ?? (p instanceof ExecProcess ? p.reaped : null);
    return {
      id: p.id,
      bundle: c.bundle,
      pid: p.pid,
      status,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exit_status: exit?.status ?? 0,
      exited_at: timestamp(exit),
    };
  }

  /** Waits for the process's running operation (a Kill during its Start signals the started process, as in Go). */
  async kill(
    ns: string,
    id: string,
    execId: string,
    signal: number,
    all: boolean,
    ctx?: RequestContext
  ): Promise<void> {
    const c = this.container(ns, id);
    await c.process(execId).operations.run(() => c.kill(execId, signal, all, ctx), ctx?.signal);
  }

  async exec(
    ns: string,
    id: string,
    execId: string,
    stdio: StdioConfig,
    spec: { value?: Uint8Array | null } | null,
    ctx?: RequestContext
  ): Promise<void> {
    const c = this.container(ns, id);
    if (!isValidIdentifier(execId)) throw invalidArgument(`invalid exec id ${JSON.stringify(execId)}`);
    if (!spec || !spec.value || spec.value.length === 0) throw invalidArgument('exec process spec is missing');
    const parsed = parseSpecJson<Record<string, unknown>>(spec.value, 'exec process spec', PROCESS_SPEC_LIMITS);
    // Go's Init.Exec holds the init's lock: an Exec during a Pause sees the paused state.
    await c.init.operations.run(async () => {
      c.addExec(execId, stdio, parsed);
      this.deps.events.execAdded(ns, id, execId);
    }, ctx?.signal);
  }

  async wait(ns: string, id: string, execId: string, signal?: AbortSignal) {
    const p = this.container(ns, id).process(execId);
    await p.wait(signal);
    return { exit_status: p.exit?.status ?? 0, exited_at: timestamp(p.exit) };
  }

  async pids(ns: string, id: string, ctx?: RequestContext) {
    const c = this.container(ns, id);
    return c.pids(ctx, this.cgroups.get(c));
  }

  async pause(ns: string, id: string, ctx?: RequestContext): Promise<void> {
    const c = this.container(ns, id);
    // When the init exited while runc paused it, its exit was published: no /tasks/paused after it.
    if (await c.init.operations.run(() => c.pause(ctx), ctx?.signal)) this.deps.events.paused(ns, id);
  }

  async resume(ns: string, id: string, ctx?: RequestContext): Promise<void> {
    const c = this.container(ns, id);
    if (await c.init.operations.run(() => c.resume(ctx), ctx?.signal)) this.deps.events.resumed(ns, id);
  }

  async update(ns: string, id: string, resources: Uint8Array, ctx?: RequestContext): Promise<void> {
    const c = this.container(ns, id);
    await c.init.operations.run(() => c.update(resources, ctx), ctx?.signal);
  }

  async stats(ns: string, id: string): Promise<{ typeUrl: string; value: Uint8Array }> {
    const c = this.container(ns, id);
    const cg = this.cgroups.get(c);
    if (!cg) throw notFound('cgroup does not exist');
    try {
      return await collectEncodedMetrics(cg);
    } catch (e) {
      if (e instanceof CgroupNotFoundError) throw notFound('cgroup does not exist');
      throw unknown(`failed to collect metrics: ${errorMessage(e)}`);
    }
  }

  resizePty(ns: string, id: string, execId: string, width: number, height: number): void {
    this.container(ns, id).resize(execId, width, height);
  }

  closeIO(ns: string, id: string, execId: string): void {
    this.container(ns, id).process(execId).io?.closeStdin();
  }

  async checkpoint(
    ns: string,
    id: string,
    imagePath: string,
    opts: CheckpointOptions,
    ctx?: RequestContext
  ): Promise<void> {
    const c = this.container(ns, id);
    await c.init.operations.run(() => c.checkpoint(imagePath, opts), ctx?.signal);
  }

  connect(ns: string, id: string) {
    const c = this.containers.get(this.key(ns, id));
    return { shim_pid: this.deps.shimPid, task_pid: c?.init.pid ?? 0, version: '' };
  }

  // ---- in-place upgrade (src/upgrade/task-state.ts) ----------------------------------------------

  /** What a container the previous process of an upgrade held needs from the service to run again. */
  containerDeps(): { runner: ServiceDeps['runner']; runcTimeoutMs: number } {
    return { runner: this.deps.runner, runcTimeoutMs: this.deps.runcTimeoutMs ?? DEFAULT_RUNC_TIMEOUT_MS };
  }

  /** The process table as the upgrade captures it: containers and the pids whose exit is awaited. */
  handoverView(): { containers: Container[]; watched: Set<Process> } {
    return {
      containers: [...this.containers.values()],
      watched: new Set([...this.running.values()].map((r) => r.process)),
    };
  }

  /**
   * Stops a container's OOM watch for the next program (in-place upgrade, called at the moment of
   * the exec): what it needs to report every OOM once. Null when nothing watches it.
   */
  handOverOom(c: Container): OomHandover | null {
    const cgroup = this.cgroups.get(c);
    const watch = cgroup ? this.oom.handover(this.key(c.namespace, c.id)) : null;
    return cgroup && watch ? { cgroup, watch } : null;
  }

  /**
   * A container of the previous process: its live processes are watched again, its cgroup and OOM
   * watch taken up, and exits that were reaped but not yet published are published now, in order.
   * The OOM watch handed over is in place before those exits, which look at it first.
   * `dryRun` (the upgrade probe's dry run of the restore, in a process that holds none of these
   * processes): the table is built, no exit is published or persisted.
   */
  adopt(c: Container, watched: Process[], oom: OomHandover | null = null, dryRun = false): void {
    const key = this.key(c.namespace, c.id);
    this.containers.set(key, c);
    this.everCreated = true;
    for (const p of watched) this.running.set(p.pid, { container: c, process: p });
    if (oom) {
      this.deps.log.debug('oom: watch taken over', { id: c.id, watch: oom.watch });
      this.cgroups.set(c, oom.cgroup);
      this.oom
        .add(key, oom.cgroup, oom.watch)
        .catch((e: unknown) => this.deps.log.warn('cannot watch for OOM', { id: c.id, error: e }));
    } else if (c.init.pid && !c.init.reaped && !c.init.exit) {
      this.deps.log.debug('oom: no watch handed over, watching anew', { id: c.id });
      this.watchCgroup(c);
    }
    if (dryRun) return;
    for (const p of [c.init, ...c.execs.values()]) {
      if (p.reaped && !p.exit) void this.handleExit(c, p, p.reaped.status);
    }
  }

  shutdown(): void {
    this.shutdownRequested = true;
    if (this.containers.size === 0) this.deps.onEmpty();
  }

  close(): void {
    this.oom.close();
    this.unsubscribeExits();
  }
}
