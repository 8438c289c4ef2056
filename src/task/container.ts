// One container: its bundle, runc client, init process and execs, and the runc work behind every
// Task operation, each one a transition of the process's state machine (state.ts). Ordering of
// events and exits, and running the operations on a process one at a time, is the service's job.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RuncClient, RuncError, readPidFile } from '../runc';
import type { Logger } from '../sys/logger';
import type { ProcessRunner } from './ports';
import { adoptProcessIO, createProcessIO, type IoState, type StdioConfig } from './io';
import { InitProcess, ExecProcess, type Process } from './process';
import { mountRootfs, unmountAll, type MountSpec } from './rootfs';
import { DEFAULT_RUNC_ROOT, type RuntimeOptions } from './options';
import { bundleFile, writeRuntimeFiles } from './bundle-files';
import { BUNDLE_SPEC_LIMITS, PROCESS_SPEC_LIMITS, parseSpecJson, readSpecFile } from './spec-json';
import { cleanupTimeoutMs } from '../runc/timeouts';
import { runcCallOptions, type RequestContext } from './deadline';
import { errorMessage, failedPrecondition, notFound, unknown, processDoesNotExist, alreadyExists } from './errors';
import type { InitState } from './state';
import type { CgroupHandle } from './cgroups/discovery';
import { pidsDirOf, readCgroupPids } from './cgroups/pids';

/** containerd.runc.v1.CheckpointOptions as decoded. */
export interface CheckpointOptions {
  exit?: boolean;
  open_tcp?: boolean;
  external_unix_sockets?: boolean;
  terminal?: boolean;
  file_locks?: boolean;
  empty_namespaces?: string[];
  work_path?: string;
}

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
    const spec = readSpecFile<{ linux?: { namespaces?: { type: string; path?: string }[] } } | null>(
      path.join(bundle, 'config.json'),
      'bundle config',
      BUNDLE_SPEC_LIMITS
    );
    const nss = spec?.linux?.namespaces ?? [];
    return !nss.some((n) => n.type === 'pid' && !n.path);
  } catch {
    // No readable config: assume the host's pid namespace, the safe side (the init's exit then
    // kills whatever is left in the cgroup).
    return true;
  }
}

/** rm -f of one file, off the event loop: one unlink (fs.promises.rm lstats first and runs rimraf's logic). */
function unlinkIfPresent(file: string): Promise<void> {
  return new Promise((resolve, reject) => fs.unlink(file, (e) => (e && e.code !== 'ENOENT' ? reject(e) : resolve())));
}

export class Container {
  readonly init: InitProcess;
  readonly execs = new Map<string, ExecProcess>();
  private reserved = new Set<string>();
  readonly runc: RuncClient;
  readonly hostPidNs: boolean;
  /** Pids reads the cgroup instead of running `runc ps` (the runtime is runc). */
  private readonly psReadsCgroup: boolean;
  /** When Create came (kept across an in-place upgrade). */
  createdAt = new Date();
  /** Running execs; the init's exit is published only after they all exited (containerd 1.7+ order). */
  runningExecs = 0;
  private execsIdle: (() => void)[] = [];

  constructor(readonly cfg: ContainerConfig) {
    this.init = new InitProcess(
      cfg.id,
      cfg.stdio,
      cfg.checkpoint ? { path: cfg.checkpoint, parent: cfg.parentCheckpoint } : null
    );
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
    // Only runc's own ps is known to be the cgroup's list (runsc, for one, lists its sandbox).
    this.psReadsCgroup = path.basename(this.runc.binary) === 'runc';
  }

  get id(): string {
    return this.cfg.id;
  }
  get bundle(): string {
    return this.cfg.bundle;
  }
  get namespace(): string {
    return this.cfg.namespace;
  }

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
    if (this.init.checkpoint) return;
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
      await created.catch((e: unknown) => {
        throw runcFailure('OCI runtime create failed', e);
      });
      await console.catch((e: unknown) => {
        throw unknown(`failed to retrieve console master: ${errorMessage(e)}`);
      });
      await io.afterRuncStarted();
      this.init.pid = await readPidFile(pidFile).catch((e: unknown) => {
        throw unknown(`failed to retrieve OCI runtime container pid: ${errorMessage(e)}`);
      });
    } catch (e) {
      await io
        .close()
        .catch((err: unknown) => this.cfg.log.warn('closing init IO after a failed create', { error: err }));
      // Bounded on its own, short: the runtime that just failed may hang here too.
      await this.runc
        .delete(this.id, { force: true, timeoutMs: cleanupTimeoutMs(this.runc.options.timeoutMs!) })
        .catch((err: unknown) => this.cfg.log.warn('runc delete after a failed create', { error: errorMessage(err) }));
      await unmountAll(path.join(bundle, 'rootfs'));
      throw e;
    }
  }

  /** `runc start`, or `runc restore` for a container created from a checkpoint. */
  async startInit(ctx?: RequestContext): Promise<void> {
    await this.init.machine.run('start', () => this.runInit(ctx));
  }

  private async runInit(ctx?: RequestContext): Promise<void> {
    const cp = this.init.checkpoint;
    if (cp) {
      const pidFile = bundleFile(this.bundle, 'initPid');
      const io = this.init.io!;
      const restored = this.runc.restore(this.id, this.bundle, {
        imagePath: cp.path,
        parentPath: cp.parent || undefined,
        workPath: this.cfg.options.criuWorkPath || path.join(this.bundle, 'work'),
        pidFile,
        consoleSocket: io.consoleSocketPath,
        noPivot: this.cfg.options.noPivotRoot,
        stdio: io.runcStdio(),
      });
      const console = io.consoleSocketPath ? io.receiveConsole() : Promise.resolve();
      await restored.catch((e: unknown) => {
        throw runcFailure('OCI runtime restore failed', e);
      });
      await console;
      await io.afterRuncStarted();
      this.init.pid = await readPidFile(pidFile);
    } else {
      await this.runc.start(this.id, runcCallOptions(ctx)).catch((e: unknown) => {
        throw runcFailure('OCI runtime start failed', e);
      });
    }
  }

  /** Registers an exec (Exec RPC); runc runs on Start. */
  addExec(execId: string, stdio: StdioConfig, spec: Record<string, unknown>): ExecProcess {
    if (this.execs.has(execId) || this.reserved.has(execId)) throw alreadyExists(`id ${execId}`);
    this.init.machine.check('exec');
    const p = new ExecProcess(this.id, execId, stdio, { ...spec, terminal: stdio.terminal });
    this.execs.set(execId, p);
    return p;
  }

  async startExec(p: ExecProcess, ctx?: RequestContext): Promise<void> {
    await p.machine.run('start', () => this.runExec(p, ctx));
  }

  private async runExec(p: ExecProcess, ctx?: RequestContext): Promise<void> {
    if (this.init.exit) throw failedPrecondition(`container ${this.id} init process is not running`);
    this.init.machine.check('exec');
    const pidFile = path.join(this.bundle, `${p.execId}.pid`);
    try {
      p.io = await createProcessIO(p.stdio, this.ioOptions(p.execId));
    } catch (e) {
      throw unknown(`failed to create exec process I/O: ${errorMessage(e)}`);
    }
    const io = p.io;
    try {
      const ran = this.runc.exec(this.id, p.spec, {
        pidFile,
        consoleSocket: io.consoleSocketPath,
        detach: true,
        stdio: io.runcStdio(),
        ...runcCallOptions(ctx),
      });
      const console = io.consoleSocketPath ? io.receiveConsole() : Promise.resolve();
      await ran.catch((e: unknown) => {
        throw runcFailure('OCI runtime exec failed', e);
      });
      await console.catch((e: unknown) => {
        throw unknown(`failed to retrieve console master: ${errorMessage(e)}`);
      });
      await io.afterRuncStarted();
      p.pid = await readPidFile(pidFile).catch((e: unknown) => {
        throw unknown(`failed to retrieve OCI runtime exec pid: ${errorMessage(e)}`);
      });
      // Held from now on, so Kill never signals another process that got this pid after the exit.
      p.holdPid();
    } catch (e) {
      await io
        .close()
        .catch((err: unknown) =>
          this.cfg.log.warn('closing exec IO after a failed start', { exec: p.execId, error: err })
        );
      p.io = null;
      throw e;
    }
  }

  async kill(execId: string, signal: number, all: boolean, ctx?: RequestContext): Promise<void> {
    const p = this.process(execId);
    if (p instanceof ExecProcess) {
      p.machine.check('kill');
      if (p.state === 'created' || p.pid === 0) throw failedPrecondition('process not created');
      if (p.exit || p.reaped !== null) throw notFound('process already finished');
      try {
        p.signal(signal);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'ESRCH') throw notFound('exec kill error: process already finished');
        throw unknown(`exec kill error: ${err.message}`);
      }
      return;
    }
    this.init.machine.check('kill');
    // The init is signalled by `runc kill`, as the Go shim does, not through a pidfd of ours: runc
    // checks the init's identity itself (its start time in /proc against runc's state, so a reused
    // pid reads as "container not running"), and `--all` needs runc's cgroup walk.
    try {
      await this.runc.kill(this.id, signal, { all, ...runcCallOptions(ctx) });
    } catch (e) {
      const msg = e instanceof RuncError ? `${e.runcMessage} ${e.output ?? ''}` : errorMessage(e);
      if (/process already finished|container not running|no such process/i.test(msg))
        throw notFound('process already finished');
      if (/does not exist/i.test(msg)) throw notFound('no such container');
      throw unknown(`unknown error after kill: ${errorMessage(e)}`);
    }
  }

  /** runc delete, close IO, unmount; the caller publishes /tasks/delete. */
  async deleteInit(ctx?: RequestContext): Promise<void> {
    // The unmount errors are reported after the transition: the container is deleted either way.
    const { result: errs } = await this.init.machine.run('delete', async () => {
      await this.drained(this.init);
      let runcErr: unknown = null;
      await this.runc.delete(this.id, runcCallOptions(ctx)).catch((e: unknown) => {
        const msg = e instanceof RuncError ? e.runcMessage : errorMessage(e);
        if (!/does not exist/i.test(msg)) runcErr = e; // else: runc forgot it already, which is what delete wants
      });
      if (runcErr) throw runcFailure('failed to delete task', runcErr);
      await this.closeIO(this.init);
      for (const e of this.execs.values()) {
        await this.closeIO(e);
        e.releasePid();
      }
      return unmountAll(path.join(this.bundle, 'rootfs'));
    });
    this.init.releaseWaiters();
    if (errs.length) throw unknown(`failed rootfs umount: ${errs.join('; ')}`);
  }

  async deleteExec(p: ExecProcess): Promise<void> {
    await p.machine.run('delete', async () => {
      await this.drained(p);
      await this.closeIO(p);
      // Off the event loop: an unlink on a journalled filesystem took ~0.8 ms here, and concurrent
      // execs queue behind every synchronous call.
      await unlinkIfPresent(path.join(this.bundle, `${p.execId}.pid`));
    });
    p.releasePid();
    p.releaseWaiters();
    this.execs.delete(p.execId);
  }

  /** `runc pause`; false when the init exited meanwhile (the exit won: stopped, and thawed again). */
  async pause(ctx?: RequestContext): Promise<boolean> {
    const { applied } = await this.init.machine.run('pause', () =>
      this.runc.pause(this.id, runcCallOptions(ctx)).catch((e: unknown) => {
        throw runcFailure('OCI runtime pause failed', e);
      })
    );
    // runc froze the cgroup after the exit handler looked at the state: what is left must be able to die.
    if (!applied) this.thaw();
    return applied;
  }

  /** `runc resume`; false when the init exited meanwhile. */
  async resume(ctx?: RequestContext): Promise<boolean> {
    const { applied } = await this.init.machine.run('resume', () =>
      this.runc.resume(this.id, runcCallOptions(ctx)).catch((e: unknown) => {
        throw runcFailure('OCI runtime resume failed', e);
      })
    );
    return applied;
  }

  async update(resources: Uint8Array, ctx?: RequestContext): Promise<void> {
    await this.init.machine.run('update', async () => {
      const parsed = resources.length ? parseSpecJson(resources, 'resources', PROCESS_SPEC_LIMITS) : {};
      await this.runc.update(this.id, parsed, runcCallOptions(ctx)).catch((e: unknown) => {
        throw runcFailure('OCI runtime update failed', e);
      });
    });
  }

  async checkpoint(imagePath: string, opts: CheckpointOptions): Promise<void> {
    await this.init.machine.run('checkpoint', async () => {
      const work = opts.work_path || path.join(this.bundle, 'work', 'criu-work');
      try {
        await this.runc.checkpoint(this.id, {
          imagePath,
          workPath: work,
          leaveRunning: !opts.exit,
          tcpEstablished: !!opts.open_tcp,
          extUnixSockets: !!opts.external_unix_sockets,
          shellJob: !!opts.terminal,
          fileLocks: !!opts.file_locks,
          emptyNamespaces: opts.empty_namespaces ?? [],
        });
      } catch (e) {
        const dump = path.join(this.bundle, 'criu-dump.log');
        // A new 0644 file like Go's os.Create (copyFileSync would keep CRIU's 0600).
        try {
          fs.writeFileSync(dump, fs.readFileSync(path.join(work, 'dump.log')), { mode: 0o644 });
        } catch {
          /* criu left no log: the error below still names the path */
        }
        const first = errorMessage(e).split('\n')[0];
        throw unknown(`${first} path= ${dump}`);
      } finally {
        if (!opts.work_path) fs.rmSync(work, { recursive: true, force: true });
      }
    });
  }

  /**
   * The container's pids as `runc ps` lists them, each with the exec id when it is one of our execs:
   * read from its cgroup when the shim knows it and the runtime is runc (cgroups/pids.ts), else
   * (another runtime, no cgroup known, or it could not be read) by `runc ps`.
   */
  async pids(ctx?: RequestContext, cgroup?: CgroupHandle): Promise<{ pid: number; execId?: string }[]> {
    const dir = cgroup && this.psReadsCgroup ? pidsDirOf(cgroup) : null;
    let pids = dir ? readCgroupPids(dir) : null;
    if (!pids) {
      try {
        pids = await this.runc.ps(this.id, runcCallOptions(ctx));
      } catch (e) {
        throw runcFailure('failed to list pids', e);
      }
    }
    const byPid = new Map<number, string>();
    for (const e of this.execs.values()) if (e.pid) byPid.set(e.pid, e.execId);
    return pids.map((pid) => ({ pid, execId: byPid.get(pid) }));
  }

  /** ResizePty: the exec's state decides (a stopped exec refuses); the init only needs a terminal. */
  resize(execId: string, width: number, height: number): void {
    const p = this.process(execId);
    if (p instanceof ExecProcess) p.machine.check('resize');
    // Without a terminal there is nothing to size: the Go shim answers OK, containerd's clients rely on it.
    if (!p.stdio.terminal) return;
    p.resize(width, height);
  }

  /**
   * The init was reaped. Without a pid namespace of its own its death does not end the other
   * processes in the container: kill them (the Go shim's ShouldKillAllOnExit), so the execs end too.
   */
  async initReaped(): Promise<void> {
    if (!this.hostPidNs) return;
    await this.runc
      .kill(this.id, 9, { all: true })
      .catch((e: unknown) =>
        this.cfg.log.warn('killing the rest of the container after its init exited', { error: errorMessage(e) })
      );
  }

  /** Whether the init's exit can go out at once: no other process of the container to end or to wait for. */
  initExitNeedsNothing(): boolean {
    return !this.hostPidNs && this.runningExecs === 0;
  }

  /** The exit is being published: the process is stopped from now on. */
  processExited(p: Process): void {
    if (p instanceof ExecProcess) {
      p.machine.apply('exit');
      this.execExited();
      return;
    }
    const was: InitState = this.init.machine.apply('exit');
    // A frozen cgroup keeps what is left in it from dying (pausedState.SetExited resumes too).
    if (was === 'paused') this.thaw();
  }

  private thaw(): void {
    void this.runc
      .resume(this.id)
      .catch((e: unknown) => this.cfg.log.warn('runc resume of the stopped container', { error: errorMessage(e) }));
  }

  /** Waits (bounded) until the process's output was copied; a stuck copier is logged, not waited for. */
  async drained(p: Process): Promise<void> {
    await p.io
      ?.waitDrained(2000)
      .catch((e: unknown) =>
        this.cfg.log.debug('IO not drained', { exec: p.execId || undefined, error: errorMessage(e) })
      );
  }

  private async closeIO(p: Process): Promise<void> {
    await p.io
      ?.close()
      .catch((e: unknown) =>
        this.cfg.log.warn('closing process IO', { exec: p.execId || undefined, error: errorMessage(e) })
      );
  }

  execStarted(): void {
    this.runningExecs++;
  }

  /** An exec that was counted by execStarted exited, or its start failed. */
  execExited(): void {
    this.runningExecs = Math.max(0, this.runningExecs - 1);
    if (this.runningExecs === 0) for (const w of this.execsIdle.splice(0)) w();
  }

  /** Resolves once no exec of this container is running. */
  execsDone(): Promise<void> {
    if (this.runningExecs === 0) return Promise.resolve();
    return new Promise((r) => this.execsIdle.push(r));
  }

  /** In-place upgrade: the IO of one of this container's processes, on the fds the previous process handed over. */
  adoptIO(p: Process, state: IoState): void {
    p.io = adoptProcessIO(state, this.ioOptions(p.execId));
  }

  private ioOptions(execId: string) {
    return {
      id: this.id,
      execId: execId || undefined,
      namespace: this.namespace,
      // The Go shim's loggers inherit its cwd, the bundle; ours chdir'd to / (serve.ts).
      cwd: this.bundle,
      ioUid: this.cfg.options.ioUid || undefined,
      ioGid: this.cfg.options.ioGid || undefined,
      // Logging binaries are libuv children: the reaper must leave their exit status to libuv.
      spawn: (cmd: string, args: readonly string[], o: import('node:child_process').SpawnOptions) =>
        this.cfg.runner.spawn(cmd, args, o),
      log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: object) =>
        this.cfg.log[level](msg, { id: this.id, exec: execId || undefined, ...fields }),
    };
  }
}
