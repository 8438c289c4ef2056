// A stand-in for the containerd daemon of a given generation, driving the REAL shim binary
// (bin/containerd-shim-tsshim-v2) the way that daemon does, without a containerd:
//   1.6      argv + TTRPC_ADDRESS, stdin = options Any;            reads stdout as a plain address
//   2.0-2.2  + MAX_SHIM_VERSION/GRPC_ADDRESS/NAMESPACE;             JSON bootstrap, else plain
//   2.3+     same env, stdin = protobuf BootstrapParams (options as an extension); protobuf result first
// (core/runtime/v2/{binary,command,shim}.go, pkg/shim/util.go). It prepares a bundle (runc spec +
// busybox rootfs + the `log` fifo held open O_RDWR|O_NONBLOCK), serves a fake events service at
// TTRPC_ADDRESS, writes bootstrap.json like 2.x, reconnects from it like a restarted 2.x, and runs
// the `delete` subcommand.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Client, Server, createMetadata } from '../../src/ttrpc';
import { containerd, google } from '../../src/gen/proto';
import { writeBusyboxRootfs, busyboxRootfs, DEFAULT_PATH } from './rootfs';
import { repoRoot } from './harness';

export type Generation = '1.6' | '2.0' | '2.3';
export const TASK_V2 = 'containerd.task.v2.Task';
export const TASK_V3 = 'containerd.task.v3.Task';
const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const boot = containerd.runtime.bootstrap.v1;
const task = containerd.task.v2;

export interface Endpoint {
  version: number;
  address: string;
  protocol: string;
  format: 'plain' | 'json' | 'protobuf';
}
export interface ForwardedEvent {
  namespace: string;
  topic: string;
  typeUrl: string;
  value: Buffer;
}

export function shimBinary(): string {
  return path.join(repoRoot(), 'bin', 'containerd-shim-tsshim-v2');
}

/** containerd's parseStartResponse for the generation; `format` says which branch took it. */
export function parseStartOutput(generation: Generation, out: Buffer): Endpoint {
  if (generation === '2.3') {
    try {
      // proto.Unmarshal rejects malformed input; protobufjs clamps Buffers, so use a plain view.
      const r = boot.BootstrapResult.decode(new Uint8Array(out.buffer, out.byteOffset, out.length));
      if (r.address) return { version: r.version, address: r.address, protocol: r.protocol, format: 'protobuf' };
    } catch {
      /* legacy forms below */
    }
  }
  const text = out.toString().trim();
  if (generation !== '1.6') {
    try {
      const j = JSON.parse(text);
      if (j && typeof j === 'object' && Number(j.version) >= 2) {
        return { version: Number(j.version), address: String(j.address), protocol: String(j.protocol), format: 'json' };
      }
    } catch {
      /* plain */
    }
  }
  return { version: 2, address: text, protocol: 'ttrpc', format: 'plain' };
}

/** containerd 1.6 dials anything without unix:// as an abstract socket: the same here. */
export function dialPath(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : '\0' + address;
}

export interface DriverOptions {
  generation: Generation;
  id: string;
  namespace: string;
  command: string[];
  options?: google.protobuf.IAny;
  debug?: boolean;
}

export class Containerd2Driver {
  readonly dir: string;
  readonly bundle: string;
  readonly grpcAddress: string;
  readonly ttrpcAddress: string;
  readonly stdoutFifo: string;
  readonly events: ForwardedEvent[] = [];
  readonly shimLog: Buffer[] = [];
  private eventsServer = new Server({ peerCheck: 'any' });
  private logFd = -1;
  private logStream?: net.Socket;
  private client?: Client;
  private waiters: Array<() => void> = [];
  endpoint?: Endpoint;
  startOutput: Buffer = Buffer.alloc(0);

  constructor(readonly opts: DriverOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-c2d-'));
    this.bundle = path.join(this.dir, 'state', opts.namespace, opts.id); // delete finds dirname(cwd)/<id>
    this.grpcAddress = path.join(this.dir, 'containerd.sock');
    this.ttrpcAddress = this.grpcAddress + '.ttrpc';
    this.stdoutFifo = path.join(this.dir, `${opts.id}-stdout`);
  }

  /** Bundle, log fifo, stdout fifo and the events service; call before start(). */
  async prepare(): Promise<void> {
    fs.mkdirSync(this.bundle, { recursive: true, mode: 0o711 });
    const rootfs = path.join(this.bundle, 'rootfs');
    const r = spawnSync('cp', ['-a', busyboxRootfs() + '/.', rootfs]);
    if (r.status !== 0) writeBusyboxRootfs(rootfs);
    fs.rmSync(path.join(rootfs, '.complete'), { force: true });
    const spec = spawnSync('runc', ['spec'], { cwd: this.bundle });
    if (spec.status !== 0) throw new Error(`runc spec: ${spec.stderr}`);
    const config = JSON.parse(fs.readFileSync(path.join(this.bundle, 'config.json'), 'utf8'));
    config.root = { path: 'rootfs', readonly: false };
    config.process.terminal = false;
    config.process.args = this.opts.command;
    config.process.env = [DEFAULT_PATH, 'TERM=xterm'];
    config.hostname = this.opts.id.slice(0, 60);
    config.linux.cgroupsPath = `/tsshim-c2d/${this.opts.namespace}-${this.opts.id}`;
    fs.writeFileSync(path.join(this.bundle, 'config.json'), JSON.stringify(config));

    // containerd: mkfifo <bundle>/log, then open it O_RDWR|O_NONBLOCK and copy it to its own log.
    run('mkfifo', [path.join(this.bundle, 'log')]);
    this.logFd = fs.openSync(path.join(this.bundle, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    // A net.Socket polls the non-blocking fd (an fs stream would read it in the thread pool: EAGAIN).
    this.logStream = new net.Socket({ fd: this.logFd, readable: true, writable: false });
    this.logStream.on('data', (d) => this.shimLog.push(Buffer.from(d)));
    this.logStream.on('error', () => {
      /* closed at cleanup */
    });
    run('mkfifo', [this.stdoutFifo]);

    await this.serveEvents();
  }

  /** containerd's events service at TTRPC_ADDRESS (again after stopEvents): every Forward is recorded in `events`. */
  async serveEvents(): Promise<void> {
    this.eventsServer = new Server({ peerCheck: 'any' });
    this.eventsServer.register(EVENTS_SERVICE, {
      Forward: (payload) => {
        const env = containerd.services.events.ttrpc.v1.ForwardRequest.decode(payload).envelope;
        this.events.push({
          namespace: env?.namespace ?? '',
          topic: env?.topic ?? '',
          typeUrl: env?.event?.type_url ?? '',
          value: Buffer.from(env?.event?.value ?? []),
        });
        for (const w of this.waiters.splice(0)) w();
        return google.protobuf.Empty.encode({}).finish();
      },
    });
    await this.eventsServer.listen(this.ttrpcAddress);
  }

  /** containerd is down: its events socket refuses (as after a restart, before it serves again). */
  async stopEvents(): Promise<void> {
    await this.eventsServer.shutdown(100).catch(() => undefined);
    fs.rmSync(this.ttrpcAddress, { force: true });
  }

  /** argv and environment of the daemon generation; `action` is start or delete. */
  command(action: 'start' | 'delete'): { args: string[]; env: NodeJS.ProcessEnv } {
    const { generation, namespace, id } = this.opts;
    const args = [
      '-namespace',
      namespace,
      '-address',
      this.grpcAddress,
      '-publish-binary',
      '/usr/bin/containerd',
      '-id',
      id,
    ];
    if (action === 'delete') args.push('-bundle', this.bundle);
    if (this.opts.debug && (action === 'start' || generation !== '1.6')) args.push('-debug');
    args.push(action);
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, GOMAXPROCS: '2', TTRPC_ADDRESS: this.ttrpcAddress };
    if (generation !== '1.6')
      Object.assign(env, { MAX_SHIM_VERSION: '2', GRPC_ADDRESS: this.grpcAddress, NAMESPACE: namespace });
    return { args, env };
  }

  /** What the daemon writes to `start`'s stdin. */
  startStdin(): Buffer {
    const { generation, namespace, id, options } = this.opts;
    if (generation !== '2.3')
      return options ? Buffer.from(google.protobuf.Any.encode(options).finish()) : Buffer.alloc(0);
    return Buffer.from(
      boot.BootstrapParams.encode({
        instance_id: id,
        namespace,
        log_level: this.opts.debug ? boot.LogLevel.LOG_LEVEL_DEBUG : boot.LogLevel.LOG_LEVEL_INFO,
        containerd_version: '2.3.0',
        containerd_ttrpc_address: this.ttrpcAddress,
        containerd_grpc_address: this.grpcAddress,
        containerd_binary: '/usr/bin/containerd',
        extensions: options ? [{ value: options }] : [],
      }).finish()
    );
  }

  /** Runs `start` like cmd.CombinedOutput(): stdout+stderr until exit and both EOF; then parses it. */
  async start(): Promise<Endpoint> {
    const { args, env } = this.command('start');
    const out = await runCombined(shimBinary(), args, env, this.bundle, this.startStdin(), 30_000);
    if (out.code !== 0) throw new Error(`start exited ${out.code}: ${out.output}`);
    this.startOutput = out.output;
    fs.writeFileSync(path.join(this.bundle, 'shim-binary-path'), shimBinary());
    this.endpoint = parseStartOutput(this.opts.generation, out.output);
    if (this.opts.generation !== '1.6') this.writeBootstrapJson(this.endpoint);
    this.client = await Client.connect(dialPath(this.endpoint.address));
    return this.endpoint;
  }

  /** 2.x stores the parsed endpoint with encoding/json (omitempty field names of the Go struct). */
  writeBootstrapJson(e: Endpoint): void {
    fs.writeFileSync(
      path.join(this.bundle, 'bootstrap.json'),
      JSON.stringify({ version: e.version, address: e.address, protocol: e.protocol })
    );
  }

  /** A restarted 2.x: bootstrap.json if present, else migrate `address` (must be plain). */
  async reconnect(): Promise<Endpoint> {
    this.client?.close();
    const file = path.join(this.bundle, 'bootstrap.json');
    let e: Endpoint;
    if (fs.existsSync(file)) {
      e = parseStartOutput('2.3', fs.readFileSync(file));
    } else {
      e = {
        version: 2,
        address: fs.readFileSync(path.join(this.bundle, 'address'), 'utf8'),
        protocol: 'ttrpc',
        format: 'plain',
      };
      this.writeBootstrapJson(e);
    }
    this.endpoint = e;
    this.client = await Client.connect(dialPath(e.address));
    return e;
  }

  async call<T>(
    service: string,
    method: string,
    req: Uint8Array,
    decode: (b: Uint8Array) => T,
    timeoutMs = 20_000
  ): Promise<T> {
    if (!this.client) throw new Error('not connected');
    const md = createMetadata({ 'containerd-namespace-ttrpc': this.opts.namespace });
    return decode(await this.client.call(service, method, req, { timeoutMs, metadata: md }));
  }

  /** The Task service containerd would pick for the endpoint (v3 only when version 3 was announced). */
  defaultTaskService(): string {
    return (this.endpoint?.version ?? 2) >= 3 ? TASK_V3 : TASK_V2;
  }

  async create(service: string): Promise<containerd.task.v2.CreateTaskResponse> {
    return this.call(
      service,
      'Create',
      task.CreateTaskRequest.encode({
        id: this.opts.id,
        bundle: this.bundle,
        rootfs: [],
        terminal: false,
        stdin: '',
        stdout: this.stdoutFifo,
        stderr: '',
        options: this.opts.options ?? null,
      }).finish(),
      (b) => task.CreateTaskResponse.decode(b)
    );
  }

  /** Reads the stdout fifo until `want` shows up (the shim keeps a writer open until Delete). */
  readStdout(want: string, timeoutMs = 15_000): Promise<string> {
    return new Promise((resolve, reject) => {
      let text = '';
      const s = fs.createReadStream(this.stdoutFifo);
      const done = (err?: Error) => {
        clearTimeout(t);
        s.destroy();
        if (err) reject(err);
        else resolve(text);
      };
      const t = setTimeout(
        () => done(new Error(`stdout: no ${JSON.stringify(want)} within ${timeoutMs} ms, got ${JSON.stringify(text)}`)),
        timeoutMs
      );
      s.on('data', (d) => {
        text += d.toString();
        if (text.includes(want)) done();
      });
      s.on('end', () => done(text.includes(want) ? undefined : new Error(`stdout ended: ${JSON.stringify(text)}`)));
      s.on('error', done);
    });
  }

  async waitEvent(topic: string, timeoutMs = 10_000): Promise<ForwardedEvent> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find((x) => x.topic === topic);
      if (e) return e;
      if (Date.now() > end) throw new Error(`no ${topic} event; got ${this.events.map((x) => x.topic).join(', ')}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  /** `delete` as 2.x runs it: -bundle, cwd = bundle, stdin empty; stdout = DeleteResponse. */
  async deleteSubcommand(): Promise<{
    code: number;
    response: containerd.task.v2.DeleteResponse | null;
    stderr: string;
  }> {
    const { args, env } = this.command('delete');
    const r = await runSplit(shimBinary(), args, env, this.bundle, 10_000);
    return {
      code: r.code,
      stderr: r.stderr.toString(),
      response: r.code === 0 ? task.DeleteResponse.decode(r.stdout) : null,
    };
  }

  shimPid(): number {
    try {
      return Number(fs.readFileSync(path.join(this.bundle, 'shim.pid'), 'utf8'));
    } catch {
      return 0;
    }
  }

  /** Stops whatever is left, by pid only, and removes the temp dir. */
  async cleanup(pids: number[] = []): Promise<void> {
    this.client?.close();
    for (const pid of [...pids, this.shimPid()]) {
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    spawnSync('runc', ['--root', `/run/containerd/runc/${this.opts.namespace}`, 'delete', '--force', this.opts.id]);
    await this.eventsServer.shutdown(100).catch(() => undefined);
    this.logStream?.destroy(); // closes logFd
    if (this.endpoint?.address.startsWith('unix://')) fs.rmSync(dialPath(this.endpoint.address), { force: true });
    for (const h of fs.existsSync('/sys/fs/cgroup') ? fs.readdirSync('/sys/fs/cgroup') : []) {
      for (const rel of [
        `tsshim-c2d/${this.opts.namespace}-${this.opts.id}`,
        `tsshim-c2d-shims/${this.opts.id}`,
        'tsshim-c2d-shims',
        'tsshim-c2d',
      ]) {
        try {
          fs.rmdirSync(path.join('/sys/fs/cgroup', h, rel));
        } catch {
          /* none, or still busy */
        }
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Creates a cgroup in every hierarchy, as an operator does for `shim_cgroup` (the Go shim only
 * loads it). On v1 a new cpuset group needs cpus/mems before it accepts tasks.
 */
export function ensureCgroup(rel: string): void {
  const root = '/sys/fs/cgroup';
  if (fs.existsSync(path.join(root, 'cgroup.controllers'))) {
    fs.mkdirSync(path.join(root, rel), { recursive: true });
    return;
  }
  for (const h of fs.readdirSync(root)) {
    if (!fs.existsSync(path.join(root, h, 'cgroup.procs'))) continue;
    let dir = path.join(root, h);
    for (const part of rel.split('/').filter(Boolean)) {
      dir = path.join(dir, part);
      fs.mkdirSync(dir, { recursive: true });
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        const mine = path.join(dir, f);
        if (fs.existsSync(mine) && !fs.readFileSync(mine, 'utf8').trim()) {
          fs.writeFileSync(mine, fs.readFileSync(path.join(path.dirname(dir), f), 'utf8').trim());
        }
      }
    }
  }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** Like Go's cmd.CombinedOutput: resolves after exit AND EOF on both pipes (a leaked pipe hangs it). */
function runCombined(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
  stdin: Buffer,
  timeoutMs: number
): Promise<{ code: number; output: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let open = 2;
    let code: number | null = null;
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: no exit+EOF in ${timeoutMs} ms (a leaked stdout/stderr?)`));
    }, timeoutMs);
    const finish = () => {
      if (open === 0 && code !== null) {
        clearTimeout(t);
        resolve({ code, output: Buffer.concat(chunks) });
      }
    };
    for (const s of [child.stdout!, child.stderr!]) {
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => {
        open--;
        finish();
      });
    }
    child.on('exit', (c, sig) => {
      code = c ?? 128 + (sig ? os.constants.signals[sig] : 0);
      finish();
    });
    child.on('error', reject);
    child.stdin!.end(stdin);
  });
}

function runSplit(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
  timeoutMs: number
): Promise<{ code: number; stdout: Buffer; stderr: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d) => out.push(d));
    child.stderr!.on('data', (d) => err.push(d));
    child.on('close', (c) => resolve({ code: c ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }));
    child.on('error', reject);
  });
}

/** True once the socket accepts a connection. */
export function canDial(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(dialPath(address));
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
