// Non-terminal IO (as containerd-shim-runc-v2's pkg/process/io.go does it): the container gets real pipes (pipe2, never socketpairs, so
// opening /dev/stdout inside the container works); the shim copies between them and containerd's
// FIFOs, a file, or hands them to a logging binary.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { withinLazy } from '../../sys/lazy-timeout';
import * as sys from '../../sys/libc';
import { BinaryLogger } from './binary-logger';
import { isFifo, isFifoSync, openInputFifo, openOutputFifo, openOutputFile, socketOnFd } from './fds';
import { pump, type PumpControl, type PumpResult } from './pump';
import {
  AdoptedLogger,
  destinationStream,
  detachCopy,
  fdOfStream,
  afterRestore,
  pumpsHandover,
  type CopyState,
  type DestinationState,
  type IoHandover,
  type PipeIoState,
} from './handover';
import { Resources } from './resources';
import { stdioPath, type OutputTarget } from './stdio-uri';
import type { ProcessIO, ProcessIOOptions, RuncStdio, StdioConfig } from './types';

type OutputName = 'stdout' | 'stderr';

type Destination = {
  dst: Writable;
  shared: boolean;
  afterCopy?: () => void;
  state: DestinationState;
  keepReaderFd?: number;
};

/** A running copy as an upgrade hands it over. */
interface LiveCopy {
  name: string;
  control: Partial<PumpControl>;
  srcFd: number;
  dst: DestinationState;
  keepReaderFd?: number;
}

export class PipeProcessIO implements ProcessIO {
  readonly consoleSocketPath = undefined;
  private readonly res = new Resources();
  private readonly stdio: RuncStdio[] = ['ignore', 'ignore', 'ignore'];
  /** Shim copies of container-side ends (and logger-side ends), closed once runc has started. */
  private readonly closeAfterStart: number[] = [];
  private readonly outputCopies: Promise<PumpResult>[] = [];
  /** Output copies not finished yet (one that failed stays counted: waitDrained decides then). */
  private copiesRunning = 0;
  /** Output copiers wait for runc to succeed: like the Go shim, a failed runc's own stderr is not copied to the client. */
  private readonly startAfterRunc: (() => void)[] = [];
  private stdinKeepAliveFd?: number;
  private logger?: BinaryLogger | AdoptedLogger;
  private closed?: Promise<void>;
  private sharedFile?: { path: string; stream: fs.WriteStream; users: number };
  private readonly live: LiveCopy[] = [];
  private stdinLive?: LiveCopy;

  private constructor(private readonly opts: ProcessIOOptions) {}

  static async create(cfg: StdioConfig, target: OutputTarget, opts: ProcessIOOptions): Promise<PipeProcessIO> {
    const io = new PipeProcessIO(opts);
    try {
      switch (target.kind) {
        case 'null':
          break; // runc and the container get /dev/null on 0, 1, 2
        case 'fifo':
          await io.setUpCopying(cfg, { stdout: stdioPath(cfg.stdout), stderr: stdioPath(cfg.stderr) }, true);
          break;
        case 'file': {
          await prepareLogFile(target.file);
          // Both streams go to the one file; the stderr URI is ignored (Go behaviour).
          const file = target.file;
          await io.setUpCopying(cfg, { stdout: cfg.stdout && file, stderr: cfg.stderr && file });
          break;
        }
        case 'binary':
          await io.setUpLogger(target.binary, target.args);
          break;
      }
    } catch (err) {
      await io.close();
      throw err;
    }
    return io;
  }

  runcStdio(): RuncStdio[] {
    return [...this.stdio];
  }

  async afterRuncStarted(): Promise<void> {
    // Without this the shim would hold the write ends and never see EOF from the container.
    for (const fd of this.closeAfterStart.splice(0)) this.res.closeFd(fd);
    this.stdio.fill('ignore');
    for (const start of this.startAfterRunc.splice(0)) start();
  }

  async receiveConsole(): Promise<void> {
    // no console outside terminal mode
  }

  resize(): void {
    // No terminal, nothing to size: the Go shim's Resize returns nil without a console, and
    // containerd's clients call it on every task.
  }

  closeStdin(): void {
    this.res.closeFd(this.stdinKeepAliveFd);
    this.stdinKeepAliveFd = undefined;
  }

  async waitDrained(timeoutMs?: number): Promise<boolean> {
    const drained = Promise.all(this.outputCopies).then(() => true);
    if (timeoutMs === undefined) return drained;
    const done = await withinLazy(drained, timeoutMs);
    if (!done) this.opts.log?.('warn', 'output not drained in time', { timeoutMs });
    return done;
  }

  outputDrained(): boolean {
    return this.copiesRunning === 0;
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.stdinKeepAliveFd = undefined;
      await this.res.releaseAll();
      await this.logger?.stop();
    })();
    return this.closed;
  }

  /** A pipe whose `containerEnd` goes to runc and is chowned to io_uid:io_gid like go-runc does. */
  private makePipe(containerEnd: 'read' | 'write'): { container: number; shim: number } {
    const [r, w] = sys.pipe2();
    this.res.fd(r);
    this.res.fd(w);
    const pair = containerEnd === 'read' ? { container: r, shim: w } : { container: w, shim: r };
    const { ioUid, ioGid } = this.opts;
    if (ioUid !== undefined || ioGid !== undefined) sys.fchown(pair.container, ioUid ?? 0, ioGid ?? 0);
    this.closeAfterStart.push(pair.container);
    return pair;
  }

  /** fifoPaths: containerd's FIFOs (local, so a synchronous stat is safe); else user file paths. */
  private async setUpCopying(cfg: StdioConfig, out: Record<OutputName, string>, fifoPaths = false): Promise<void> {
    const destinationFor = async (name: OutputName, p: string): Promise<Destination> => {
      if (fifoPaths ? isFifoSync(p) : await isFifo(p)) {
        const fifo = await openOutputFifo(p).catch((err: Error) => {
          throw new Error(`containerd-shim: opening ${name} fifo ${JSON.stringify(p)} failed: ${err.message}`);
        });
        this.res.fd(fifo.keepReaderFd);
        this.res.stream(fifo.writer);
        // The extra reader goes only after the writer finished (see openOutputFifo).
        return {
          dst: fifo.writer,
          shared: false,
          afterCopy: () => this.res.closeFd(fifo.keepReaderFd),
          state: { kind: 'socket', fd: fdOfStream(fifo.writer) },
          keepReaderFd: fifo.keepReaderFd,
        };
      }
      if (this.sharedFile && this.sharedFile.path === p) {
        this.sharedFile.users++;
        return {
          dst: this.sharedFile.stream,
          shared: true,
          state: { kind: 'file', fd: fdOfStream(this.sharedFile.stream) },
        };
      }
      const stream = await openOutputFile(p).catch((err: Error) => {
        throw new Error(`containerd-shim: opening ${name} file ${JSON.stringify(p)} failed: ${err.message}`);
      });
      this.res.stream(stream);
      const shared = out.stdout === out.stderr;
      if (shared) this.sharedFile = { path: p, stream, users: 1 };
      return { dst: stream, shared, state: { kind: 'file', fd: fdOfStream(stream) } };
    };

    const copies: ({ name: OutputName; src: number } & Destination)[] = [];
    for (const name of ['stdout', 'stderr'] as const) {
      if (!out[name]) continue;
      const pipe = this.makePipe('write');
      this.stdio[name === 'stdout' ? 1 : 2] = pipe.container;
      copies.push({ name, src: pipe.shim, ...(await destinationFor(name, out[name])) });
    }

    let stdinCopy: { src: import('node:net').Socket; dst: number } | undefined;
    if (cfg.stdin) {
      const pipe = this.makePipe('read');
      this.stdio[0] = pipe.container;
      const p = stdioPath(cfg.stdin);
      const fifo = await openInputFifo(p).catch((err: Error) => {
        throw new Error(`containerd-shim: opening stdin fifo ${JSON.stringify(p)} failed: ${err.message}`);
      });
      this.res.stream(fifo.reader);
      this.stdinKeepAliveFd = this.res.fd(fifo.keepAliveFd);
      stdinCopy = { src: fifo.reader, dst: pipe.shim };
    }

    // Everything opened. Output copying starts once runc succeeded (afterRuncStarted): until then
    // the pipes hold only runc's own error text, which the Go shim never shows the client (it
    // reports it through log.json instead); Sockets take over the shim-side pipe ends from then on.
    for (const c of copies) {
      this.startAfterRunc.push(() => {
        this.res.forget(c.src);
        this.startCopy(c.name, c.src, c);
      });
    }
    if (stdinCopy) {
      this.res.forget(stdinCopy.dst);
      this.startStdin(stdinCopy.src, stdinCopy.dst);
    }
  }

  private startCopy(name: string, srcFd: number, d: Destination, pending?: Buffer): void {
    const src = this.res.stream(socketOnFd(srcFd, 'read'));
    const control: Partial<PumpControl> = {};
    this.live.push({ name, control, srcFd, dst: d.state, keepReaderFd: d.keepReaderFd });
    // Written after the synchronous restore (see afterRestore): a restore that fails falls back to
    // the previous build with the same state, which writes these bytes itself.
    if (pending?.length) afterRestore(() => d.dst.write(pending));
    const copy = pump(src, d.dst, { name, log: this.opts.log, endDestination: !d.shared, control }).then(async (r) => {
      d.afterCopy?.();
      const sharedFile = this.sharedFile;
      if (d.shared && sharedFile && --sharedFile.users === 0)
        await new Promise<void>((done) => sharedFile.stream.end(done));
      return r;
    });
    this.outputCopies.push(copy);
    this.copiesRunning++;
    copy.then(
      () => this.copiesRunning--,
      () => {}
    );
  }

  private startStdin(src: import('node:net').Socket, dstFd: number, pending?: Buffer): void {
    const dst = this.res.stream(socketOnFd(dstFd, 'write'));
    const control: Partial<PumpControl> = {};
    this.stdinLive = { name: 'stdin', control, srcFd: fdOfStream(src), dst: { kind: 'socket', fd: dstFd } };
    if (pending?.length) afterRestore(() => dst.write(pending));
    // At stdin EOF pump ends dst, which closes the container's stdin pipe: the container sees EOF.
    // A write error means the container no longer reads stdin; that is normal, log quietly.
    void pump(src, dst, { name: 'stdin', log: quietStdinLog(this.opts.log), control });
  }

  // ---- in-place upgrade ----

  /** The hand-over controls, or why this IO cannot be handed over now. */
  handover(): IoHandover | string {
    if (this.startAfterRunc.length) return 'runc has not started the process yet';
    if (this.closed) return 'IO is closing';
    const controls = [...this.live.map((l) => l.control), ...(this.stdinLive ? [this.stdinLive.control] : [])];
    return pumpsHandover(controls, (view) => {
      const copy = (l: LiveCopy): CopyState =>
        detachCopy(
          l.name,
          l.control,
          l.srcFd,
          l.dst,
          l.keepReaderFd === undefined ? {} : { keepReaderFd: l.keepReaderFd },
          view
        );
      const stdin = this.stdinLive ? { ...copy(this.stdinLive), keepAliveFd: this.stdinKeepAliveFd } : null;
      return { kind: 'pipe', copies: this.live.map(copy), stdin, loggerPid: this.logger?.pid } satisfies PipeIoState;
    });
  }

  /** The IO of a process the previous shim process ran, on its handed-over fds. */
  static adopt(state: PipeIoState, opts: ProcessIOOptions): PipeProcessIO {
    const io = new PipeProcessIO(opts);
    const shared = new Map<number, number>(); // file fd -> copies writing to it
    for (const c of state.copies)
      if (!c.done && c.dst.kind === 'file') shared.set(c.dst.fd, (shared.get(c.dst.fd) ?? 0) + 1);
    const fileStreams = new Map<number, fs.WriteStream>();
    for (const c of state.copies) {
      if (c.done) continue;
      let d: Destination;
      if (c.dst.kind === 'file') {
        let stream = fileStreams.get(c.dst.fd);
        const isShared = (shared.get(c.dst.fd) ?? 0) > 1;
        if (!stream) {
          stream = io.res.stream(destinationStream(c.dst) as fs.WriteStream);
          fileStreams.set(c.dst.fd, stream);
          if (isShared) io.sharedFile = { path: `fd:${c.dst.fd}`, stream, users: shared.get(c.dst.fd)! };
        }
        d = { dst: stream, shared: isShared, state: c.dst };
      } else if (c.dst.kind === 'socket' && !c.dropping) {
        const dst = io.res.stream(destinationStream(c.dst) as import('node:net').Socket);
        const keep = c.keepReaderFd;
        if (keep !== undefined) io.res.fd(keep);
        d = {
          dst,
          shared: false,
          state: c.dst,
          keepReaderFd: keep,
          afterCopy: keep === undefined ? undefined : () => io.res.closeFd(keep),
        };
      } else {
        d = { dst: new Writable({ write: (_c, _e, cb) => cb() }), shared: false, state: { kind: 'discard' } };
      }
      io.startCopy(c.name, c.srcFd, d, Buffer.from(c.pending, 'base64'));
    }
    if (state.stdin && !state.stdin.done) {
      if (state.stdin.keepAliveFd !== undefined) io.stdinKeepAliveFd = io.res.fd(state.stdin.keepAliveFd);
      const src = io.res.stream(socketOnFd(state.stdin.srcFd, 'read'));
      io.startStdin(src, (state.stdin.dst as { fd: number }).fd, Buffer.from(state.stdin.pending, 'base64'));
    } else if (state.stdin?.keepAliveFd !== undefined) {
      io.stdinKeepAliveFd = io.res.fd(state.stdin.keepAliveFd);
    }
    if (state.loggerPid) io.logger = new AdoptedLogger(state.loggerPid);
    return io;
  }

  private async setUpLogger(binary: string, args: string[]): Promise<void> {
    // Both pipes are always made, even for an empty stream, as the Go shim does.
    const out = this.makePipe('write');
    const err = this.makePipe('write');
    this.stdio[1] = out.container;
    this.stdio[2] = err.container;
    this.logger = await BinaryLogger.start({
      binary,
      args,
      containerId: this.opts.execId ?? this.opts.id,
      namespace: this.opts.namespace,
      stdoutFd: out.shim,
      stderrFd: err.shim,
      spawn: this.opts.spawn,
      log: this.opts.log,
      signal: this.opts.signal,
      cwd: this.opts.cwd,
    });
    // The logger holds its own copies now. Unlike the Go shim (which keeps the write ends until
    // Delete) we also drop ours after runc started, so the logger sees EOF when the container's
    // output ends.
    this.closeAfterStart.push(out.shim, err.shim);
  }
}

/** file:// target: mkdir -p the parent (0755) and create the file for appending (0644). */
async function prepareLogFile(file: string): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const fh = await fs.promises.open(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644);
  await fh.close();
}

function quietStdinLog(log: ProcessIOOptions['log']): ProcessIOOptions['log'] {
  if (!log) return undefined;
  return (level, msg, fields) => log(level === 'warn' ? 'debug' : level, msg, fields);
}
