// Terminal mode (as containerd-shim-runc-v2 runs it, with runc's --console-socket): runc creates the pty in the container and sends us the master
// over a console socket; we copy master -> stdout and stdin -> master.
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { Writable } from 'node:stream';
import { withinLazy } from '../../sys/lazy-timeout';
import * as sys from '../../sys/libc';
import { BinaryLogger } from './binary-logger';
import { ConsoleSocket } from './console-socket';
import { closeFdQuietly, openInputFifo, openOutputFifo, socketOnFd, socketOnPtyMaster } from './fds';
import { pump, type PumpControl } from './pump';
import {
  AdoptedLogger,
  destinationStream,
  detachCopy,
  fdOfStream,
  afterRestore,
  pumpsHandover,
  type DestinationState,
  type IoHandover,
  type TerminalIoState,
} from './handover';
import { Resources } from './resources';
import { stdioPath, type OutputTarget } from './stdio-uri';
import type { ProcessIO, ProcessIOOptions, RuncStdio, StdioConfig } from './types';

export class TerminalProcessIO implements ProcessIO {
  private readonly res = new Resources();
  private console?: ConsoleSocket;
  private stdinReader?: net.Socket;
  private stdinKeepAliveFd?: number;
  private stdoutDst?: Writable;
  /** The master as received: kept for resize, and open until exit processing / close(). */
  private masterFd?: number;
  private masterSocket?: net.Socket;
  /** A size asked for before the master arrived: applied as soon as it does. */
  private pendingSize?: { width: number; height: number };
  /** Set once the master arrived: a resize after it was closed again is an error, not an early one. */
  private masterReceived = false;
  private drained: Promise<void> = Promise.resolve();
  /** Whether `drained` has resolved (false while the console is copied, and after a failed copy). */
  private consoleDrained = true;
  private logger?: BinaryLogger | AdoptedLogger;
  private stdoutState: DestinationState = { kind: 'discard' };
  private stdoutKeepReaderFd?: number;
  private consoleControl: Partial<PumpControl> = {};
  private stdinControl: Partial<PumpControl> = {};
  private receiving?: Promise<void>;
  private readonly readBuf = Buffer.allocUnsafe(64 * 1024);
  private closed?: Promise<void>;

  private constructor(private readonly opts: ProcessIOOptions) {}

  get consoleSocketPath(): string | undefined {
    return this.console?.path;
  }

  static async create(cfg: StdioConfig, target: OutputTarget, opts: ProcessIOOptions): Promise<TerminalProcessIO> {
    if (target.kind === 'file') throw new Error('file:// stdio is not supported with a terminal');
    const io = new TerminalProcessIO(opts);
    try {
      io.console = await ConsoleSocket.create();
      io.res.onRelease(() => io.console?.close());
      // stderr is unused with a terminal (ctr and CRI pass none).
      if (target.kind === 'fifo' && cfg.stdout) {
        const p = stdioPath(cfg.stdout);
        const fifo = await openOutputFifo(p).catch((err: Error) => {
          throw new Error(`failed to open stdout fifo ${JSON.stringify(p)}: ${err.message}`);
        });
        io.res.fd(fifo.keepReaderFd);
        io.stdoutDst = io.res.stream(fifo.writer);
        io.stdoutState = { kind: 'socket', fd: fdOfStream(fifo.writer) };
        io.stdoutKeepReaderFd = fifo.keepReaderFd;
      } else if (target.kind === 'binary') {
        io.stdoutDst = await io.startLogger(target.binary, target.args);
        io.stdoutState = { kind: 'socket', fd: fdOfStream(io.stdoutDst) };
      }
      if (cfg.stdin) {
        const p = stdioPath(cfg.stdin);
        const fifo = await openInputFifo(p).catch((err: Error) => {
          throw new Error(`failed to open stdin fifo ${JSON.stringify(p)}: ${err.message}`);
        });
        io.stdinReader = io.res.stream(fifo.reader);
        io.stdinKeepAliveFd = io.res.fd(fifo.keepAliveFd);
      }
    } catch (err) {
      await io.close();
      throw err;
    }
    return io;
  }

  runcStdio(): RuncStdio[] {
    return ['ignore', 'ignore', 'ignore'];
  }

  async afterRuncStarted(): Promise<void> {
    // nothing of the container's is held here: its stdio is the pty slave
  }

  receiveConsole(): Promise<void> {
    this.receiving ??= this.takeConsole();
    // Rejections stay visible to whoever awaits, but never crash the shim when nobody does
    // (e.g. runc create failed first and close() ended the wait).
    this.receiving.catch(() => undefined);
    return this.receiving;
  }

  private async takeConsole(): Promise<void> {
    if (!this.console || this.closed) throw new Error('console socket already closed');
    const master = await this.console.receiveMaster({ signal: this.opts.signal });
    if (this.closed) {
      closeFdQuietly(master);
      throw new Error('process IO closed while receiving the console');
    }
    this.masterFd = master;
    this.masterReceived = true;
    // First thing: the container may already run and ask for its size.
    if (this.pendingSize) {
      try {
        sys.setWinsize(master, this.pendingSize.height, this.pendingSize.width);
      } catch (err) {
        this.opts.log?.('warn', 'cannot apply the early terminal size', { error: (err as Error).message });
      }
      this.pendingSize = undefined;
    }
    await this.console.close();
    // The socket owns a duplicate: Node destroys a stream on a read error (EIO once the slave is
    // gone), and the master itself must stay open until the exit has been processed.
    let dupFd: number;
    try {
      dupFd = sys.dupCloexec(master);
    } catch (err) {
      this.closeMaster();
      throw err;
    }
    // The drain after end-of-stream reads the master directly and must never block.
    sys.setNonBlocking(master, true);
    this.startCopies(dupFd);
  }

  private startCopies(dupFd: number, pending?: { console?: Buffer; stdin?: Buffer }): void {
    const sock = this.res.stream(socketOnPtyMaster(dupFd));
    this.masterSocket = sock;
    const out = this.stdoutDst ?? discard();
    const consolePending = pending?.console;
    if (consolePending?.length) afterRestore(() => out.write(consolePending));
    this.consoleDrained = false;
    this.drained = pump(sock, out, {
      name: 'console',
      log: this.opts.log,
      endOnErrorCodes: ['EIO'],
      readRemaining: () => this.readMasterNow(),
      control: this.consoleControl,
    }).then(() => {
      this.consoleDrained = true;
    });
    if (this.stdinReader) {
      const stdinPending = pending?.stdin;
      if (stdinPending?.length) afterRestore(() => sock.write(stdinPending));
      // Go: when stdin ends (CloseIO + client closed its end) the console is shut down and the
      // master closed, so the container's session gets a hangup.
      void pump(this.stdinReader, sock, { name: 'stdin', endDestination: false, control: this.stdinControl }).then(() =>
        this.closeMaster()
      );
    }
  }

  // ---- in-place upgrade ----

  /** The hand-over controls, or why this IO cannot be handed over now. */
  handover(): IoHandover | string {
    if (this.closed) return 'IO is closing';
    if (this.receiving && this.masterFd === undefined && !this.masterReceived)
      return 'the console master has not arrived yet';
    if (this.masterFd === undefined || !this.masterSocket) {
      // The master is closed (stdin ended: the session got its hangup): nothing flows any more.
      const none = detachCopy('console', {}, -1, { kind: 'discard' });
      return pumpsHandover([], () => ({
        kind: 'terminal',
        masterFd: -1,
        console: none,
        stdin: null,
        loggerPid: this.logger?.pid,
      }));
    }
    const masterSocket = this.masterSocket;
    return pumpsHandover([this.consoleControl, this.stdinControl], (view) => {
      const dupFd = fdOfStream(masterSocket);
      const console = detachCopy(
        'console',
        this.consoleControl,
        dupFd,
        this.stdoutState,
        this.stdoutKeepReaderFd === undefined ? {} : { keepReaderFd: this.stdoutKeepReaderFd },
        view
      );
      const stdin = this.stdinReader
        ? {
            ...detachCopy(
              'stdin',
              this.stdinControl,
              fdOfStream(this.stdinReader),
              { kind: 'socket', fd: dupFd },
              {},
              view
            ),
            keepAliveFd: this.stdinKeepAliveFd,
          }
        : null;
      return {
        kind: 'terminal',
        masterFd: this.masterFd!,
        console,
        stdin,
        loggerPid: this.logger?.pid,
      } satisfies TerminalIoState;
    });
  }

  /** The terminal IO of a process the previous shim process ran, on its handed-over fds. */
  static adopt(state: TerminalIoState, opts: ProcessIOOptions): TerminalProcessIO {
    const io = new TerminalProcessIO(opts);
    if (state.masterFd >= 0) io.masterFd = state.masterFd;
    io.masterReceived = true;
    io.receiving = Promise.resolve();
    const c = state.console;
    if (c.dst.kind !== 'discard' && !c.done) {
      io.stdoutDst = io.res.stream(destinationStream(c.dst) as import('node:net').Socket);
      io.stdoutState = c.dst;
      if (c.keepReaderFd !== undefined) {
        io.res.fd(c.keepReaderFd);
        io.stdoutKeepReaderFd = c.keepReaderFd;
      }
    }
    if (state.stdin && !state.stdin.done) io.stdinReader = io.res.stream(socketOnFd(state.stdin.srcFd, 'read'));
    if (state.stdin?.keepAliveFd !== undefined) io.stdinKeepAliveFd = io.res.fd(state.stdin.keepAliveFd);
    if (state.loggerPid) io.logger = new AdoptedLogger(state.loggerPid);
    if (c.done) {
      io.drained = Promise.resolve();
      return io;
    }
    io.startCopies(c.srcFd, {
      console: Buffer.from(c.pending, 'base64'),
      stdin: state.stdin ? Buffer.from(state.stdin.pending, 'base64') : undefined,
    });
    return io;
  }

  resize(width: number, height: number): void {
    if (this.masterFd !== undefined) return sys.setWinsize(this.masterFd, height, width);
    // Not received yet (ResizePty between Exec and Start, or while runc runs): keep the latest.
    if (!this.masterReceived && !this.closed) {
      this.pendingSize = { width, height };
      return;
    }
    throw new Error('resize: console not available');
  }

  closeStdin(): void {
    this.res.closeFd(this.stdinKeepAliveFd);
    this.stdinKeepAliveFd = undefined;
  }

  async waitDrained(timeoutMs?: number): Promise<boolean> {
    const drained = this.drained.then(() => true);
    if (timeoutMs === undefined) return drained;
    const done = await withinLazy(drained, timeoutMs);
    if (!done) this.opts.log?.('warn', 'console output not drained in time', { timeoutMs });
    return done;
  }

  outputDrained(): boolean {
    return this.consoleDrained;
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.stdinKeepAliveFd = undefined;
      this.closeMaster();
      await this.res.releaseAll();
      await this.logger?.stop();
    })();
    return this.closed;
  }

  /** One non-blocking read of the master: data, or null on EAGAIN / EIO (slave gone) / closed. */
  private readMasterNow(): Buffer | null {
    if (this.masterFd === undefined) return null;
    try {
      const n = fs.readSync(this.masterFd, this.readBuf, 0, this.readBuf.length, null);
      return n > 0 ? Buffer.from(this.readBuf.subarray(0, n)) : null;
    } catch {
      // EAGAIN (nothing yet) or EIO (the slave side closed): both mean no output now, the
      // copier's end-of-output handling takes it from there.
      return null;
    }
  }

  private closeMaster(): void {
    this.masterSocket?.destroy();
    closeFdQuietly(this.masterFd);
    this.masterFd = undefined;
  }

  /** Logger fed from the master on fd 3; its fd 4 pipe exists but stays silent (Go behaviour). */
  private async startLogger(binary: string, args: string[]): Promise<Writable> {
    const [outR, outW] = sys.pipe2();
    this.res.fd(outR);
    this.res.fd(outW);
    const [errR, errW] = sys.pipe2();
    this.res.fd(errR);
    this.res.fd(errW);
    this.logger = await BinaryLogger.start({
      binary,
      args,
      containerId: this.opts.execId ?? this.opts.id,
      namespace: this.opts.namespace,
      stdoutFd: outR,
      stderrFd: errR,
      spawn: this.opts.spawn,
      log: this.opts.log,
      signal: this.opts.signal,
      cwd: this.opts.cwd,
    });
    this.res.closeFd(outR);
    this.res.closeFd(errR);
    this.res.forget(outW);
    return this.res.stream(socketOnFd(outW, 'write'));
  }
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _enc, cb) => cb() });
}
