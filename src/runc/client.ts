// Typed client for the runc CLI. Command lines follow the Go shim's exactly (go-runc's, flag for flag).
// Every invocation goes through the reaper's run(), which leaves runc's exit status to libuv, so
// the global reaper never steals it, and bounds it with a deadline.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { RunOptions, RunResult, RunStdio } from '../sys/reaper';
import { RuncError, fileSize, readLogError } from './errors';
import { lookPath } from './look-path';
import { DEFAULT_RUNC_TIMEOUT_MS, formatDuration } from './timeouts';

/** One of the runc child's fds 0-2: an fd it inherits, 'ignore' (/dev/null), 'pipe' (captured). */
export type RuncStdio = RunStdio;

/** Anything that can run a command like Reaper.run (tests and light-weight callers may pass their own). */
export interface CommandRunner {
  run(command: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

export interface RuncClientOptions {
  /** runc binary, resolved through PATH when not absolute (default 'runc'). */
  binary?: string;
  /** --root: state directory (the shim passes <Options.root or /run/containerd/runc>/<namespace>). */
  root?: string;
  /** --log: path of runc's JSON log (the shim passes <bundle>/log.json). */
  log?: string;
  /** Alternative to log: directory that holds log.json. */
  logDir?: string;
  /** --log-format (default 'json' when a log is set; errors are only extracted from json). */
  logFormat?: 'json' | 'text';
  systemdCgroup?: boolean;
  /** --criu (containerd 1.6 passes it only when set). */
  criuPath?: string;
  debug?: boolean;
  /** Deadline of every run unless a call says otherwise (default TSSHIM_RUNC_TIMEOUT, else 120 s). */
  timeoutMs?: number;
  /** Base environment (default process.env); NOTIFY_SOCKET is always removed. */
  env?: NodeJS.ProcessEnv;
  /** Runs runc: the shim's reaper, so that runc's exit status is never taken by its waitpid(-1). */
  runner: CommandRunner;
}

export interface CallOptions {
  /** Deadline of this run (the shim passes what is left of containerd's deadline). */
  timeoutMs?: number;
  /** Aborting SIGKILLs runc (the RPC was cancelled, or its deadline passed). */
  signal?: AbortSignal;
}

interface ProcessStdioOptions extends CallOptions {
  pidFile?: string;
  consoleSocket?: string;
  /** fds 0, 1, 2 for runc (and so for the container process). Default /dev/null. */
  stdio?: RuncStdio[];
  /** Extra fds passed as 3, 4, ... (create: with --preserve-fds). */
  extraFds?: number[];
}

export interface CreateOptions extends ProcessStdioOptions {
  noPivot?: boolean;
  noNewKeyring?: boolean;
  /** Accepted for symmetry with exec; `runc create` always detaches and has no such flag. */
  detach?: boolean;
}

export interface ExecOptions extends ProcessStdioOptions {
  /** --detach (default true: runc returns once the process started). */
  detach?: boolean;
}

export interface CheckpointOptions extends CallOptions {
  imagePath: string;
  workPath?: string;
  parentPath?: string;
  /** --leave-running (the Go shim passes it unless the checkpoint should stop the container). */
  leaveRunning?: boolean;
  tcpEstablished?: boolean;
  extUnixSockets?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  emptyNamespaces?: string[];
}

export interface RestoreOptions extends ProcessStdioOptions {
  imagePath: string;
  workPath?: string;
  parentPath?: string;
  noPivot?: boolean;
  /** --detach (default true). */
  detach?: boolean;
  /** -no-subreaper (default true: the shim is the subreaper). */
  noSubreaper?: boolean;
}

export interface RuncState {
  ociVersion: string;
  id: string;
  pid: number;
  status: 'created' | 'running' | 'paused' | 'stopped' | string;
  bundle: string;
  rootfs: string;
  created: string;
  owner?: string;
  annotations?: Record<string, string>;
}

export interface RuncVersion {
  runc: string;
  commit: string;
  spec: string;
  raw: string;
}

export class RuncClient {
  readonly binary: string;
  readonly root?: string;
  readonly log?: string;
  readonly options: Readonly<RuncClientOptions>;
  private envCache?: NodeJS.ProcessEnv;

  constructor(opts: RuncClientOptions) {
    this.options = { ...opts };
    this.binary = opts.binary || 'runc';
    this.root = opts.root || undefined;
    this.log = opts.log || (opts.logDir ? path.join(opts.logDir, 'log.json') : undefined);
  }

  /** Global flags, in the Go shim's order. */
  globalArgs(): string[] {
    const o = this.options;
    const out: string[] = [];
    if (this.root) out.push('--root', this.root);
    if (o.debug) out.push('--debug');
    if (this.log) out.push('--log', this.log, '--log-format', o.logFormat ?? 'json');
    if (o.criuPath) out.push('--criu', o.criuPath);
    if (o.systemdCgroup) out.push('--systemd-cgroup');
    return out;
  }

  // ---- life cycle ---------------------------------------------------------------------------

  /** `create --bundle B --pid-file P [--console-socket S] [--no-pivot] [--no-new-keyring] [--preserve-fds N] id` */
  async create(id: string, bundle: string, opts: CreateOptions = {}): Promise<void> {
    const args = ['--bundle', bundle];
    if (opts.pidFile) args.push('--pid-file', path.resolve(opts.pidFile));
    if (opts.consoleSocket) args.push('--console-socket', opts.consoleSocket);
    if (opts.noPivot) args.push('--no-pivot');
    if (opts.noNewKeyring) args.push('--no-new-keyring');
    if (opts.extraFds?.length) args.push('--preserve-fds', String(opts.extraFds.length));
    args.push(id);
    await this.runProcessCommand('create', args, opts);
  }

  /** `start id` */
  async start(id: string, opts: CallOptions = {}): Promise<void> {
    await this.call('start', [id], opts);
  }

  /**
   * `exec --process <tmpfile> [--console-socket S] [--detach] --pid-file P id`: the OCI process
   * JSON goes through a private temp file (runc-process<random>), removed after runc returns.
   */
  async exec(id: string, processSpec: object | string, opts: ExecOptions = {}): Promise<void> {
    const specFile = writeProcessFile(typeof processSpec === 'string' ? processSpec : JSON.stringify(processSpec));
    try {
      const args = ['--process', specFile];
      if (opts.consoleSocket) args.push('--console-socket', opts.consoleSocket);
      if (opts.detach ?? true) args.push('--detach');
      if (opts.pidFile) args.push('--pid-file', path.resolve(opts.pidFile));
      args.push(id);
      await this.runProcessCommand('exec', args, opts);
    } finally {
      // A random name nobody reuses: removed off the event loop, without holding up the caller.
      fs.unlink(specFile, () => {}); // a private 0600 temp file: a leftover harms nobody
    }
  }

  /** `kill [--all] id <signal number>` */
  async kill(id: string, signal: number, opts: CallOptions & { all?: boolean } = {}): Promise<void> {
    const args = opts.all ? ['--all', id, String(signal)] : [id, String(signal)];
    await this.call('kill', args, opts);
  }

  /** `delete [--force] id` */
  async delete(id: string, opts: CallOptions & { force?: boolean } = {}): Promise<void> {
    await this.call('delete', opts.force ? ['--force', id] : [id], opts);
  }

  /** `state id`, parsed. */
  async state(id: string, opts: CallOptions = {}): Promise<RuncState> {
    const r = await this.call('state', [id], opts, undefined, true);
    return parseJson<RuncState>('state', r.stdout);
  }

  /** `ps --format json id`: host pids of the container's processes ([] when it has none). */
  async ps(id: string, opts: CallOptions = {}): Promise<number[]> {
    const r = await this.call('ps', ['--format', 'json', id], opts, undefined, true);
    const pids = parseJson<number[] | null>('ps', r.stdout);
    return Array.isArray(pids) ? pids : [];
  }

  async pause(id: string, opts: CallOptions = {}): Promise<void> {
    await this.call('pause', [id], opts);
  }

  async resume(id: string, opts: CallOptions = {}): Promise<void> {
    await this.call('resume', [id], opts);
  }

  /** `update --resources - id` with the OCI LinuxResources JSON on stdin (one line + newline). */
  async update(id: string, resources: unknown, opts: CallOptions = {}): Promise<void> {
    const json = typeof resources === 'string' ? resources.trim() : JSON.stringify(resources);
    await this.call('update', ['--resources', '-', id], opts, `${json}\n`);
  }

  /**
   * `checkpoint --image-path I --work-path W [--parent-path P] [--tcp-established] [--ext-unix-sk]
   * [--shell-job] [--file-locks] [--empty-ns ns]... [--leave-running] id`
   */
  async checkpoint(id: string, opts: CheckpointOptions): Promise<void> {
    const args = ['--image-path', opts.imagePath];
    if (opts.workPath) args.push('--work-path', opts.workPath);
    if (opts.parentPath) args.push('--parent-path', opts.parentPath);
    if (opts.tcpEstablished) args.push('--tcp-established');
    if (opts.extUnixSockets) args.push('--ext-unix-sk');
    if (opts.shellJob) args.push('--shell-job');
    if (opts.fileLocks) args.push('--file-locks');
    for (const ns of opts.emptyNamespaces ?? []) args.push('--empty-ns', ns);
    if (opts.leaveRunning) args.push('--leave-running');
    args.push(id);
    await this.call('checkpoint', args, opts);
  }

  /**
   * `restore --image-path I --work-path W [--parent-path P] --detach --pid-file F [--console-socket S]
   * [--no-pivot] -no-subreaper --bundle B id` (single-dash -no-subreaper and --bundle last, like Go).
   */
  async restore(id: string, bundle: string, opts: RestoreOptions): Promise<void> {
    const args = ['--image-path', opts.imagePath];
    if (opts.workPath) args.push('--work-path', opts.workPath);
    if (opts.parentPath) args.push('--parent-path', opts.parentPath);
    if (opts.detach ?? true) args.push('--detach');
    if (opts.pidFile) args.push('--pid-file', path.resolve(opts.pidFile));
    if (opts.consoleSocket) args.push('--console-socket', opts.consoleSocket);
    if (opts.noPivot) args.push('--no-pivot');
    if (opts.noSubreaper ?? true) args.push('-no-subreaper');
    args.push('--bundle', bundle, id);
    await this.runProcessCommand('restore', args, opts);
  }

  /** `features` as JSON, or null when this runc has no such command (before 1.1). */
  async features(opts: CallOptions = {}): Promise<Record<string, unknown> | null> {
    let r: RunResult;
    try {
      r = await this.call('features', [], opts, undefined, true);
    } catch (e) {
      if (
        e instanceof RuncError &&
        !e.notFound &&
        !e.timedOut &&
        /no help topic|unknown command|not supported|flag provided but not defined/i.test(
          `${e.output ?? ''} ${e.logMessage ?? ''}`
        )
      ) {
        return null;
      }
      throw e;
    }
    return parseJson<Record<string, unknown>>('features', r.stdout);
  }

  /** `runc --version`, parsed like go-runc (runc version X / commit: Y / spec: Z). */
  async version(opts: CallOptions = {}): Promise<RuncVersion> {
    const r = await this.invoke('--version', [], opts, { global: false, capture: true, readLog: false });
    const raw = r.stdout.toString('utf8');
    const v: RuncVersion = { runc: '', commit: '', spec: '', raw };
    const lines = raw.trim().split('\n');
    if (lines[0]?.startsWith('runc version ')) {
      v.runc = lines[0].slice('runc version '.length).trim();
      for (const l of lines.slice(1)) {
        if (l.startsWith('commit: ')) v.commit = l.slice(8).trim();
        else if (l.startsWith('spec: ')) v.spec = l.slice(6).trim();
      }
    }
    return v;
  }

  // ---- running ------------------------------------------------------------------------------

  /**
   * A command without container stdio: its output captured for errors, and for results where
   * `parsed` (stdout alone). Otherwise stdout and stderr share one pipe, go-runc's combined output
   * (one pipe less per runc call: ~0.1 ms of our CPU).
   */
  private call(sub: string, args: string[], opts: CallOptions, input?: string, parsed = false): Promise<RunResult> {
    const stdio: [RunStdio, RunStdio, RunStdio] = [
      input !== undefined ? 'pipe' : 'ignore',
      'pipe',
      parsed ? 'pipe' : 'stdout',
    ];
    return this.invoke(sub, args, opts, { global: true, capture: true, readLog: true, input, stdio });
  }

  /**
   * create/exec/restore: runc's stdio is the container's stdio (the container inherits it).
   * In terminal mode (console socket) the container gets the pty instead, so runc's own output
   * is captured for the error message, as the Go shim does.
   */
  private runProcessCommand(sub: string, args: string[], opts: ProcessStdioOptions): Promise<RunResult> {
    let stdio: [RunStdio, RunStdio, RunStdio];
    if (opts.consoleSocket) {
      stdio = ['ignore', 'pipe', 'pipe'];
    } else {
      const s = opts.stdio ?? [];
      stdio = [s[0] ?? 'ignore', s[1] ?? 'ignore', s[2] ?? 'ignore'];
    }
    return this.invoke(sub, args, opts, {
      global: true,
      capture: false,
      readLog: true,
      stdio,
      extraFds: opts.extraFds,
    });
  }

  private async invoke(
    sub: string,
    args: string[],
    opts: CallOptions,
    how: {
      global: boolean;
      capture: boolean;
      readLog: boolean;
      input?: string;
      stdio?: [RunStdio, RunStdio, RunStdio];
      extraFds?: number[];
    }
  ): Promise<RunResult> {
    const argv = [...(how.global ? this.globalArgs() : []), sub, ...args];
    const logFrom = how.readLog && this.log && this.options.logFormat !== 'text' ? fileSize(this.log) : -1;
    const stdio: [RunStdio, RunStdio, RunStdio] = how.stdio ?? [
      how.input !== undefined ? 'pipe' : 'ignore',
      'pipe',
      'pipe',
    ];
    let r: RunResult;
    const timeoutMs = opts.timeoutMs ?? this.options.timeoutMs ?? DEFAULT_RUNC_TIMEOUT_MS;
    const started = Date.now();
    // Copied once per client: copying the whole environment on every call showed in profiles.
    const env = (this.envCache ??= runcEnv(this.options.env));
    const binary = lookPath(this.binary, env.PATH);
    try {
      r = await this.options.runner.run(binary, argv, {
        stdio,
        input: how.input,
        extraFds: how.extraFds,
        env,
        timeoutMs,
        signal: opts.signal,
      });
    } catch (e) {
      // The caller's signal fires at its deadline too (containerd's timeout): report that as one.
      const deadlinePassed = Date.now() - started >= timeoutMs - 50;
      throw this.launchError(sub, argv, e, { binary, timeoutMs, deadlinePassed });
    }
    if (r.code === 0) return r;
    const captured = stdio[1] === 'pipe' || stdio[2] === 'pipe';
    const combined = stdio[2] === 'stdout';
    const output = captured ? Buffer.concat([r.stdout, r.stderr]).toString('utf8') : undefined;
    let message = `${this.binary} did not terminate successfully: exit status ${r.code}`;
    if (output !== undefined) message += `: ${output}`;
    const log = logFrom >= 0 ? readLogError(this.log!, logFrom) : {};
    throw new RuncError({
      command: sub,
      args: argv,
      exitCode: r.code,
      output,
      stderr: captured && !combined ? r.stderr.toString('utf8') : undefined,
      logMessage: log.message,
      logReadError: log.readError,
      message,
    });
  }

  private launchError(
    sub: string,
    argv: string[],
    e: unknown,
    run: { binary: string; timeoutMs: number; deadlinePassed: boolean }
  ): RuncError {
    const err = e as NodeJS.ErrnoException & { timeoutMs?: number; stdout?: Buffer; stderr?: Buffer };
    if (err?.code === 'ENOENT') {
      return new RuncError({
        command: sub,
        args: argv,
        exitCode: -1,
        notFound: true,
        message: `runc binary ${JSON.stringify(this.binary)} not found`,
      });
    }
    if (err?.code === 'EACCES') {
      return new RuncError({
        command: sub,
        args: argv,
        exitCode: -1,
        notFound: true,
        message: `runc binary ${JSON.stringify(this.binary)} is not executable`,
      });
    }
    const output =
      err?.stdout || err?.stderr
        ? Buffer.concat([err.stdout ?? Buffer.alloc(0), err.stderr ?? Buffer.alloc(0)]).toString('utf8')
        : undefined;
    if (err?.code === 'ETIMEDOUT' || (err?.code === 'ABORT_ERR' && run.deadlinePassed)) {
      return new RuncError({
        command: sub,
        args: argv,
        exitCode: -1,
        timedOut: true,
        output,
        message: `runc ${sub}: ${run.binary} did not answer within ${formatDuration(run.timeoutMs)} (killed with SIGKILL)`,
      });
    }
    if (err?.code === 'ABORT_ERR') {
      return new RuncError({
        command: sub,
        args: argv,
        exitCode: -1,
        timedOut: true,
        message: `${this.binary} ${sub}: ${err.message}`,
      });
    }
    return new RuncError({
      command: sub,
      args: argv,
      exitCode: -1,
      message: `${this.binary} ${sub}: ${err?.message ?? String(e)}`,
    });
  }
}

/** The shim's environment minus NOTIFY_SOCKET (runc would talk to systemd on our behalf otherwise). */
function runcEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  delete env.NOTIFY_SOCKET;
  return env;
}

function parseJson<T>(what: string, data: Buffer): T {
  const text = data.toString('utf8').trim();
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`runc ${what}: cannot parse output as JSON (${(e as Error).message}): ${text.slice(0, 200)}`);
  }
}

/** os.tmpdir() reads TMPDIR, TMP and TEMP through a capability check each (18 syscalls): once. */
let tmpDir: string | undefined;

/**
 * runc-process<random> in $XDG_RUNTIME_DIR (else the temp dir), created exclusively, mode 0600. The
 * name needs no cryptographic randomness (Go's os.CreateTemp, which the Go shim uses, has none
 * either: O_EXCL and the retries make it safe); node:crypto costs every daemon ~10 ms to load.
 */
function writeProcessFile(json: string): string {
  const dir = process.env.XDG_RUNTIME_DIR || (tmpDir ??= os.tmpdir());
  for (let attempt = 0; ; attempt++) {
    const file = path.join(dir, `runc-process${1e9 + Math.floor(Math.random() * 9e9)}`);
    try {
      fs.writeFileSync(file, json, { flag: 'wx', mode: 0o600 });
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 10) throw e;
    }
  }
}
