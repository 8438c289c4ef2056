// One container: its bundle, runc client, init process and execs, and the runc work behind every
// Task operation. Ordering of events and exits is the service's job (service.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RuncClient, RuncError, readPidFile } from '../runc';
import type { Logger } from '../sys/logger';
import type { ProcessRunner } from './ports';
import { createProcessIO, type StdioConfig } from './io';
import { InitProcess, ExecProcess, type Process } from './process';
import { checkExec, checkInit } from './state';
import { mountRootfs, unmountAll, type MountSpec } from './rootfs';
import { DEFAULT_RUNC_ROOT, type RuntimeOptions } from './options';
import { bundleFile, writeRuntimeFiles } from './bundle-files';
import { BUNDLE_SPEC_LIMITS, readSpecFile } from './spec-json';
import { cleanupTimeoutMs } from '../runc/timeouts';
import { runcCallOptions, type RequestContext } from './deadline';
import { errorMessage, failedPrecondition, notFound, unknown, processDoesNotExist, alreadyExists } from './errors';

export interface ContainerConfig {
  id: string;
  namespace: string;
  bundle: string;
  rootfs: MountSpec[];
  stdio: StdioConfig;
  checkpoint: string;
  parentCheckpoint: string;
  options: RuntimeOptions;
  log: Logger;
  /** Runs runc and the logging binaries (the shim's reaper, which leaves them their exit status). */
  runner: ProcessRunner;
  /** Deadline of a runc run when containerd sends none (configuration). */
  runcTimeoutMs: number;
}

/** runc's own error text behind a prefix, as containerd users know it (the last error runc wrote to log.json, as containerd-shim-runc-v2 reports it). */
export function runcFailure(prefix: string, err: unknown): Error {
  return unknown(`${prefix}: ${err instanceof RuncError ? err.runcMessage : errorMessage(err)}`);
}

/** True when the container has no pid namespace of its own (its init's death does not end the rest). */
export function sharesHostPidNamespace(bundle: string): boolean {
  try {
    const spec = readSpecFile<any>(path.join(bundle, 'config.json'), 'bundle config', BUNDLE_SPEC_LIMITS);
    const nss: { type: string; path?: string }[] = spec?.linux?.namespaces ?? [];
    return !nss.some((n) => n.type === 'pid' && !n.path);
  } catch {
    return true;
  }
}

export class Container {
  readonly init: InitProcess;
  readonly execs = new Map<string, ExecProcess>();
  private reserved = new Set<string>();
  readonly runc: RuncClient;
  readonly hostPidNs: boolean;
  readonly createdAt = new Date();
  /** Running execs; the init's exit is published only after they all exited (containerd 1.7+ order). */
  runningExecs = 0;
  private execsIdle: (() => void)[] = [];

  constructor(readonly cfg: ContainerConfig) {
    this.init = new InitProcess(cfg.id, '', cfg.stdio);
    const o = cfg.options;
    this.runc = new RuncClient({
      binary: o.binaryName || 'runc',
      root: path.join(o.root || DEFAULT_RUNC_ROOT, cfg.namespace),
      log: bundleFile(cfg.bundle, 'runcLog'),
      systemdCgroup: o.systemdCgroup,
      criuPath: o.criuPath || undefined,
      runner: cfg.runner,
      timeoutMs: cfg.runcTimeoutMs,
    });
    this.hostPidNs = sharesHostPidNamespace(cfg.bundle);
  }

  get id(): string { return this.cfg.id; }
  get bundle(): string { return this.cfg.bundle; }
  get namespace(): string { return this.cfg.namespace; }

  process(execId: string): Process {
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw processDoesNotExist(execId);
    return p;
  }

  /** Side files, rootfs, IO and `runc create` (or only the preparation for a restore). */
  async create(ctx?: RequestContext): Promise<void> {
    const { bundle, options } = this.cfg;
    writeRuntimeFiles(bundle, options);
    await mountRootfs(bundle, this.cfg.rootfs);
    try {
      this.init.io = await createProcessIO(this.cfg.stdio, this.ioOptions(''));
    } catch (e) {
      await unmountAll(path.join(bundle, 'rootfs'));
      throw unknown(`failed to create init process I/O: ${errorMessage(e)}`);
    }
    if (this.cfg.checkpoint) {
      this.init.state = 'created-checkpoint';
      this.init.checkpoint = { path: this.cfg.checkpoint, parent: this.cfg.parentCheckpoint };
      return;
    }
    const io = this.init.io;
    try {
      const pidFile = bundleFile(bundle, 'initPid');
      const created = this.runc.create(this.id, bundle, {
        pidFile,
        consoleSocket: io.consoleSocketPath,
        noPivot: options.noPivotRoot,
        noNewKeyring: options.noNewKeyring,
        stdio: io.runcStdio(),
        ...runcCallOptions(ctx),
      });
      // runc connects to the console socket before it returns: receive concurrently.
      const console = io.consoleSocketPath ? io.receiveConsole() : Promise.resolve();
      await created.catch((e: unknown) => { throw runcFailure('OCI runtime create failed', e); });
      await console.catch((e: unknown) => { throw unknown(`failed to retrieve console master: ${errorMessage(e)}`); });
      await io.afterRuncStarted();
      this.init.pid = await readPidFile(pidFile).catch((e: unknown) => {
        throw unknown(`failed to retrieve OCI runtime container pid: ${errorMessage(e)}`);
      });
    } catch (e) {
      await io.close().catch(() => {});
      // Bounded on its own, short: the runtime that just failed may hang here too.
      await this.runc.delete(this.id, { force: true, timeoutMs: cleanupTimeoutMs(this.runc.options.timeoutMs!) }).catch(() => {});
      await unmountAll(path.join(bundle, 'rootfs'));
      throw e;
    }
  }

  /** `runc start`, or `runc restore` for a container created from a checkpoint. */
  async startInit(ctx?: RequestContext): Promise<void> {
    checkInit(this.init.state, 'start');
    if (this.init.state === 'created-checkpoint') {
      const cp = this.init.checkpoint!;
      const pidFile = bundleFile(this.bundle, 'initPid');
      const io = this.init.io!;
      const restored = this.runc.restore(this.id, this.bundle, {
        imagePath: cp.path, parentPath: cp.parent || undefined,
        workPath: this.cfg.options.criuWorkPath || path.join(this.bundle, 'work'),
        pidFile, consoleSocket: io.consoleSocketPath, noPivot: this.cfg.options.noPivotRoot, stdio: io.runcStdio(),
      });
      const console = io.consoleSocketPath ? io.receiveConsole() : Promise.resolve();
      await restored.catch((e: unknown) => { throw runcFailure('OCI runtime restore failed', e); });
      await console;
      await io.afterRuncStarted();
      this.init.pid = await readPidFile(pidFile);
    } else {
      await this.runc.start(this.id, runcCallOptions(ctx)).catch((e: unknown) => { throw runcFailure('OCI runtime start failed', e); });
    }
    this.init.state = 'running';
  }

  /** Registers an exec (Exec RPC); runc runs on Start. */
  addExec(execId: string, stdio: StdioConfig, spec: Record<string, unknown>): ExecProcess {
    if (this.execs.has(execId) || this.reserved.has(execId)) throw alreadyExists(`id ${execId}`);
    checkInit(this.init.state, 'exec');
    const p = new ExecProcess(this.id, execId, stdio, { ...spec, terminal: stdio.terminal });
    this.execs.set(execId, p);
    return p;
  }

  async startExec(p: ExecProcess, ctx?: RequestContext): Promise<void> {
    checkExec(p.state, 'start');
    if (this.init.exit) throw failedPrecondition(`container ${this.id} init process is not running`);
    checkInit(this.init.state, 'exec');
    const pidFile = path.join(this.bundle, `${p.execId}.pid`);
    try {
      p.io = await createProcessIO(p.stdio, this.ioOptions(p.execId));
    } catch (e) {
      throw unknown(`failed to create exec process I/O: ${errorMessage(e)}`);
    }
    const io = p.io;
    try {
      const ran = this.runc.exec(this.id, p.spec, {
        pidFile, consoleSocket: io.consoleSocketPath, detach: true, stdio: io.runcStdio(), ...runcCallOptions(ctx),
      });
      const console = io.consoleSocketPath ? io.receiveConsole() : Promise.resolve();
      await ran.catch((e: unknown) => { throw runcFailure('OCI runtime exec failed', e); });
      await console.catch((e: unknown) => { throw unknown(`failed to retrieve console master: ${errorMessage(e)}`); });
      await io.afterRuncStarted();
      p.pid = await readPidFile(pidFile).catch((e: unknown) => {
        throw unknown(`failed to retrieve OCI runtime exec pid: ${errorMessage(e)}`);
      });
      // Held from now on, so Kill never signals another process that got this pid after the exit.
      p.holdPid();
    } catch (e) {
      await io.close().catch(() => {});
      p.io = null;
      throw e;
    }
    p.state = 'running';
  }

  async kill(execId: string, signal: number, all: boolean, ctx?: RequestContext): Promise<void> {
    const p = this.process(execId);
    if (p instanceof ExecProcess) {
      checkExec(p.state, 'kill');
      if (p.state === 'created' || p.pid === 0) throw failedPrecondition('process not created');
      if (p.exit || p.reaped !== null) throw notFound('process already finished');
      try { p.signal(signal); } catch (e: any) {
        if (e.code === 'ESRCH') throw notFound('exec kill error: process already finished');
        throw unknown(`exec kill error: ${e.message}`);
      }
      return;
    }
    checkInit(this.init.state, 'kill');
    // The init is signalled by `runc kill`, as the Go shim does, not through a pidfd of ours: runc
    // checks the init's identity itself (its start time in /proc against runc's state, so a reused
    // pid reads as "container not running"), and `--all` needs runc's cgroup walk.
    try {
      await this.runc.kill(this.id, signal, { all, ...runcCallOptions(ctx) });
    } catch (e) {
      const msg = e instanceof RuncError ? `${e.runcMessage} ${e.output ?? ''}` : errorMessage(e);
      if (/process already finished|container not running|no such process/i.test(msg)) throw notFound('process already finished');
      if (/does not exist/i.test(msg)) throw notFound('no such container');
      throw unknown(`unknown error after kill: ${errorMessage(e)}`);
    }
  }

  /** runc delete, close IO, unmount; the caller publishes /tasks/delete. */
  async deleteInit(ctx?: RequestContext): Promise<void> {
    checkInit(this.init.state, 'delete');
    await this.init.io?.waitDrained(2000).catch(() => {});
    let runcErr: unknown = null;
    await this.runc.delete(this.id, runcCallOptions(ctx)).catch((e: unknown) => {
      const msg = e instanceof RuncError ? e.runcMessage : errorMessage(e);
      if (!/does not exist/i.test(msg)) runcErr = e;
    });
    if (runcErr) throw runcFailure('failed to delete task', runcErr);
    await this.init.io?.close().catch(() => {});
    for (const e of this.execs.values()) { await e.io?.close().catch(() => {}); e.releasePid(); }
    const errs = await unmountAll(path.join(this.bundle, 'rootfs'));
    this.init.state = 'deleted';
    this.init.releaseWaiters();
    if (errs.length) throw unknown(`failed rootfs umount: ${errs.join('; ')}`);
  }

  async deleteExec(p: ExecProcess): Promise<void> {
    checkExec(p.state, 'delete');
    await p.io?.waitDrained(2000).catch(() => {});
    await p.io?.close().catch(() => {});
    // Off the event loop: an unlink on a journalled filesystem took ~0.8 ms here, and concurrent
    // execs queue behind every synchronous call.
    await fs.promises.rm(path.join(this.bundle, `${p.execId}.pid`), { force: true });
    p.state = 'deleted';
    p.releasePid();
    p.releaseWaiters();
    this.execs.delete(p.execId);
  }

  execStarted(): void { this.runningExecs++; }

  execExited(): void {
    this.runningExecs = Math.max(0, this.runningExecs - 1);
    if (this.runningExecs === 0) for (const w of this.execsIdle.splice(0)) w();
  }

  /** Resolves once no exec of this container is running. */
  execsDone(): Promise<void> {
    if (this.runningExecs === 0) return Promise.resolve();
    return new Promise((r) => this.execsIdle.push(r));
  }

  private ioOptions(execId: string) {
    return {
      id: this.id, execId: execId || undefined, namespace: this.namespace,
      // The Go shim's loggers inherit its cwd, the bundle; ours chdir'd to / (serve.ts).
      cwd: this.bundle,
      ioUid: this.cfg.options.ioUid || undefined, ioGid: this.cfg.options.ioGid || undefined,
      // Logging binaries are libuv children: the reaper must leave their exit status to libuv.
      spawn: (cmd: string, args: readonly string[], o: import('node:child_process').SpawnOptions) => this.cfg.runner.spawn(cmd, args, o),
      log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: object) =>
        this.cfg.log[level](msg, { id: this.id, exec: execId || undefined, ...fields }),
    };
  }
}
