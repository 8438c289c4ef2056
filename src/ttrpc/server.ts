// ttrpc server: owns listeners and connections, checks peers, shuts down gracefully.
import * as net from 'node:net';
import { MAX_MESSAGE_SIZE } from './channel';
import { DEFAULT_RESOURCE_LIMITS, ResourceLimits, ServerLimits } from './limits';
import { isSameUser, PeerCred, peerCredOf } from './peercred';
import { ConnectionHandover, InFlightCall, LogFn, ServerConnection } from './server-connection';
import { BidiStreamHandler, ClientStreamHandler, ServerStreamHandler, ServiceRegistry, UnaryHandler } from './services';

export type PeerCheck = 'same-uid' | 'any' | ((cred: PeerCred) => boolean);

export interface ServerOptions {
  /** Largest frame body accepted and sent; default 4 MiB like containerd/ttrpc. */
  maxMessageSize?: number;
  /** Who may connect. 'same-uid' (default) = same effective uid and gid as this process. */
  peerCheck?: PeerCheck;
  log?: LogFn;
  /** How to read the peer's credentials; tests replace it to fake another user. */
  peerCredLookup?: (socket: net.Socket) => PeerCred;
  /** Bounds on partial frames, unread replies, pending calls and frames per turn; each defaults (DEFAULT_RESOURCE_LIMITS). */
  limits?: Partial<ResourceLimits>;
  /**
   * Called when a connection opens or closes: memory may have been taken or freed (a process that
   * collects garbage when idle should count it as activity, calls alone miss a client that never called).
   */
  onActivity?: () => void;
  /** Calls a new process may run again after an in-place upgrade (see ServerConnection.handover). */
  replayable?: (service: string, method: string) => boolean;
}

export const DEFAULT_SHUTDOWN_GRACE_MS = 5000;

export class Server {
  private readonly registry = new ServiceRegistry();
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners = new Set<net.Server>();
  private readonly maxMessageSize: number;
  private readonly peerCheck: PeerCheck;
  private readonly log: LogFn;
  private readonly peerCredLookup: (socket: net.Socket) => PeerCred;
  private readonly limits: ServerLimits<ServerConnection>;
  private readonly onActivity: () => void;
  private readonly replayable?: (service: string, method: string) => boolean;
  private shuttingDown = false;
  /** Upgrade quiesce: connections (new ones too) are not read. */
  private holding = false;
  private allClosed: (() => void) | null = null;

  constructor(opts: ServerOptions = {}) {
    this.maxMessageSize = opts.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.peerCheck = opts.peerCheck ?? 'same-uid';
    this.log = opts.log ?? (() => {});
    this.peerCredLookup = opts.peerCredLookup ?? peerCredOf;
    this.limits = new ServerLimits(
      { ...DEFAULT_RESOURCE_LIMITS, ...definedOnly(opts.limits) },
      () => this.connections.size
    );
    this.onActivity = opts.onActivity ?? (() => {});
    this.replayable = opts.replayable;
  }

  // ---- in-place upgrade ----

  /** Stops reading requests on every connection, and on those accepted from now on, until release(). */
  hold(): void {
    this.holding = true;
    for (const c of this.connections) c.hold();
  }

  release(): void {
    this.holding = false;
    for (const c of this.connections) c.release();
  }

  /** Calls in flight per connection, and reply bytes not flushed, while held. */
  inFlight(): { conn: ServerConnection; calls: InFlightCall[]; unsent: number }[] {
    return [...this.connections].map((conn) => ({ conn, calls: conn.inFlight(), unsent: conn.unsentBytes }));
  }

  /** Detaches every connection for the next process; `skip(conn, id)` names calls answered elsewhere. */
  handover(
    skip: (conn: ServerConnection) => ReadonlySet<number>
  ): { conn: ServerConnection; handover: ConnectionHandover }[] {
    return [...this.connections].map((conn) => ({ conn, handover: conn.handover(skip(conn)) }));
  }

  /** A connection of the previous process: served again from its request counter and unread input. */
  adopt(socket: net.Socket, state: { lastRequestId: number; input: Buffer }): ServerConnection | null {
    return this.accept(socket, state);
  }

  /** Current usage against the limits (for metrics and tests). */
  get usage(): { partialFrameBytes: number; unsentBytes: number; pendingCalls: number } {
    return {
      partialFrameBytes: this.limits.partial.total,
      unsentBytes: this.limits.unsent.total,
      pendingCalls: this.limits.calls.total,
    };
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  register(service: string, methods: Record<string, UnaryHandler>): void {
    for (const [method, handler] of Object.entries(methods))
      this.registry.add(service, method, { kind: 'unary', handler });
  }

  registerServerStream(service: string, method: string, handler: ServerStreamHandler): void {
    this.registry.add(service, method, { kind: 'server-stream', handler });
  }

  registerClientStream(service: string, method: string, handler: ClientStreamHandler): void {
    this.registry.add(service, method, { kind: 'client-stream', handler });
  }

  registerBidiStream(service: string, method: string, handler: BidiStreamHandler): void {
    this.registry.add(service, method, { kind: 'bidi-stream', handler });
  }

  /** Serve connections of an already listening net.Server (e.g. one created on an inherited fd). */
  serve(server: net.Server): void {
    if (this.shuttingDown) throw new Error('ttrpc: server closed');
    this.listeners.add(server);
    server.on('connection', (socket) => this.accept(socket));
  }

  /** Create a unix socket at `path` and serve it. */
  listen(path: string): Promise<void> {
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log('error', 'ttrpc: listener error', { path, err: err.message }));
        this.serve(server);
        resolve();
      });
    });
  }

  /**
   * Stop accepting, let in-flight calls answer for up to `graceMs`, then cancel whatever is left and
   * close every connection. New calls during the grace period get UNAVAILABLE "ttrpc: server closed".
   */
  async shutdown(graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> {
    this.shuttingDown = true;
    const listenersClosed = [...this.listeners].map(
      (l) => new Promise<void>((resolve) => (l.listening ? l.close(() => resolve()) : resolve()))
    );
    this.listeners.clear();
    const drained = new Promise<void>((resolve) => {
      if (this.connections.size === 0) return resolve();
      this.allClosed = resolve;
      for (const c of [...this.connections]) c.drain();
    });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
    const timedOut = await Promise.race([drained.then(() => false), expired]);
    if (timer) clearTimeout(timer);
    if (timedOut) {
      this.log('warn', 'ttrpc: shutdown grace expired, cancelling in-flight calls', {
        connections: this.connections.size,
      });
      for (const c of [...this.connections]) c.destroy();
    }
    await Promise.all(listenersClosed);
  }

  private accept(socket: net.Socket, adopted?: { lastRequestId: number; input: Buffer }): ServerConnection | null {
    if (this.shuttingDown) {
      socket.destroy();
      return null;
    }
    if (!this.peerAllowed(socket)) {
      socket.destroy();
      return null;
    }
    const conn = new ServerConnection(socket, {
      registry: this.registry,
      maxMessageSize: this.maxMessageSize,
      log: this.log,
      limits: this.limits,
      replayable: this.replayable,
      adopted,
      onClosed: (c) => {
        this.connections.delete(c);
        this.onActivity();
        if (this.connections.size === 0 && this.allClosed) this.allClosed();
      },
    });
    this.connections.add(conn);
    if (this.holding) conn.hold();
    this.onActivity();
    return conn;
  }

  private peerAllowed(socket: net.Socket): boolean {
    if (this.peerCheck === 'any') return true;
    let cred: PeerCred;
    try {
      cred = this.peerCredLookup(socket);
    } catch (err) {
      this.log('error', 'ttrpc: refusing connection: cannot read peer credentials', { err: (err as Error).message });
      return false;
    }
    let ok = false;
    try {
      ok = this.peerCheck === 'same-uid' ? isSameUser(cred) : this.peerCheck(cred);
    } catch (err) {
      this.log('error', 'ttrpc: peer check threw', { err: String(err) });
    }
    if (!ok)
      this.log('warn', 'ttrpc: refusing connection after handshake', { pid: cred.pid, uid: cred.uid, gid: cred.gid });
    return ok;
  }
}

function definedOnly<T extends object>(o: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o ?? {})) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
