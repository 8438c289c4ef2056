// The --console-socket runc sends the pty master over: we listen before runc create/exec and
// receive one fd (SCM_RIGHTS) once runc connects, as go-runc's console socket does.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as sys from '../../sys/libc';

/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
const RECV_RETRY_MS = 5;

export class ConsoleSocket {
  private connection?: Promise<net.Socket>;
  private accepted?: net.Socket;
  private closed = false;
  private readonly closedSignal = new AbortController();

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly server: net.Server
  ) {}

  /** mkdtemp($XDG_RUNTIME_DIR or the temp dir, "pty") + "/pty.sock", listening. */
  static async create(): Promise<ConsoleSocket> {
    const runtimeDir = process.env.XDG_RUNTIME_DIR;
    const dir = await fs.promises.mkdtemp(path.join(runtimeDir || os.tmpdir(), 'pty'));
    const sockPath = path.join(dir, 'pty.sock');
    if (Buffer.byteLength(sockPath) > MAX_SOCKET_PATH) {
      await fs.promises.rm(dir, { recursive: true, force: true });
      throw new Error(`console socket path ${sockPath} is longer than ${MAX_SOCKET_PATH} bytes`);
    }
    // pauseOnConnect: libuv must not read the connection, the fd arrives with recvmsg only.
    const server = net.createServer({ pauseOnConnect: true });
    const sock = new ConsoleSocket(sockPath, dir, server);
    sock.connection = new Promise((resolve) => {
      server.on('connection', (conn) => {
        conn.on('error', () => undefined);
        if (sock.accepted || sock.closed) return void conn.destroy(); // only runc's first connection counts
        sock.accepted = conn;
        resolve(conn);
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(sockPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      if (runtimeDir) await fs.promises.chmod(sockPath, 0o1755 /* rwxr-xr-x + sticky, as the Go shim */);
    } catch (err) {
      await sock.close();
      throw err;
    }
    return sock;
  }

  /**
   * Waits for runc's connection and receives the pty master (close-on-exec) it sends. No time limit
   * by default (runc's own deadline bounds it); close() or opts.signal end the wait.
   */
  async receiveMaster(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<number> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.closedSignal.signal]) : this.closedSignal.signal;
    const conn = await this.withDeadline(
      this.connection!,
      deadline,
      signal,
      'waiting for runc to connect to the console socket'
    );
    const fd = (conn as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) throw new Error('console socket connection has no fd');
    for (;;) {
      try {
        return sys.recvFd(fd);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'EOF') throw new Error('runc closed the console socket without sending the pty master');
        if (code !== 'EAGAIN') throw err;
      }
      await this.withDeadline(
        new Promise((r) => setTimeout(r, RECV_RETRY_MS)),
        deadline,
        signal,
        'receiving the pty master'
      );
    }
  }

  /** Closes the listener and the connection, removes the temp dir. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closedSignal.abort();
    this.accepted?.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await fs.promises.rm(this.dir, { recursive: true, force: true });
  }

  private async withDeadline<T>(
    p: Promise<T>,
    deadline: number,
    signal: AbortSignal | undefined,
    what: string
  ): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          if (deadline !== Infinity) {
            timer = setTimeout(() => reject(new Error(`${what}: timed out`)), Math.max(0, deadline - Date.now()));
          }
          onAbort = () => reject(new Error(`${what}: ${this.closed ? 'console socket closed' : 'aborted'}`));
          if (signal?.aborted) onAbort();
          signal?.addEventListener('abort', onAbort);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }
}
