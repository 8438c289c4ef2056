// Container IO (src/task/io) in non-terminal modes, against real FIFOs made with mkfifo and real
// child processes standing in for runc + the container (they get runcStdio() as fds 0, 1, 2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { noFdLeak } from '../support/proc';
import { sleep } from '../support/wait';
import { createProcessIO, parseOutputTarget, StdioUriError, type IoLog, type ProcessIO } from '../../src/task/io';
import { pump } from '../../src/task/io/pump';
import * as sys from '../../src/sys/libc';

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
const NS = 'unit-ns';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-io-'));
}

function mkfifos(dir: string, ...names: string[]): string[] {
  return names.map((n) => {
    const p = path.join(dir, n);
    execFileSync('mkfifo', [p]);
    return p;
  });
}

/** What containerd does with a stdout/stderr FIFO: open it for reading and collect to EOF. */
function readFifo(p: string): { sock: net.Socket; chunks: Buffer[]; done: Promise<Buffer> } {
  const fd = fs.openSync(p, O_RDONLY | O_NONBLOCK);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<Buffer>((resolve, reject) => {
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    sock.on('error', reject);
  });
  return { sock, chunks, done };
}

/** What containerd does with a stdin FIFO: open it for writing. */
function writeFifo(p: string): net.Socket {
  const fd = fs.openSync(p, O_WRONLY | O_NONBLOCK);
  return new net.Socket({ fd, readable: false, writable: true });
}

/** Stand-in for runc + container: a shell with the process IO's fds as its stdio. */
async function runContainer(io: ProcessIO, script: string): Promise<ChildProcess> {
  const child = spawn('/bin/sh', ['-c', script], { stdio: io.runcStdio() });
  await once(child, 'spawn');
  await io.afterRuncStarted();
  return child;
}

function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return once(child, 'exit').then(([code]) => code as number | null);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function recordingLog(): { log: IoLog; entries: { level: string; msg: string }[] } {
  const entries: { level: string; msg: string }[] = [];
  return { log: (level, msg) => entries.push({ level, msg }), entries };
}

test('8 MiB burst then exit: every byte reaches the stdout FIFO, stderr kept separate', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const [stdout, stderr] = mkfifos(dir, 'out', 'err');
    const payload = randomBytes(8 * 1024 * 1024);
    const payloadFile = path.join(dir, 'payload');
    fs.writeFileSync(payloadFile, payload);
    const io = await createProcessIO({ stdin: '', stdout, stderr, terminal: false }, { id: 'c1', namespace: NS });
    const stdio = io.runcStdio();
    assert.equal(stdio[0], 'ignore');
    assert.equal(typeof stdio[1], 'number');
    assert.equal(typeof stdio[2], 'number');
    const child = await runContainer(io, `cat ${payloadFile}; echo to-stderr >&2; exit 3`);
    assert.deepEqual(io.runcStdio(), ['ignore', 'ignore', 'ignore'], 'container-side fds released after start');
    // containerd attaches late: output waits in the FIFO / pipe, nothing is lost.
    await sleep(200);
    assert.equal(io.outputDrained(), false, 'nothing reads the FIFO yet: the copy cannot have finished');
    const out = readFifo(stdout);
    const err = readFifo(stderr);
    assert.equal(await exitOf(child), 3);
    assert.equal(await io.waitDrained(10_000), true);
    assert.equal(io.outputDrained(), true, 'told without waiting once drained');
    const [outBytes, errBytes] = await Promise.all([out.done, err.done]);
    assert.equal(outBytes.length, payload.length);
    assert.equal(sha256(outBytes), sha256(payload));
    assert.equal(errBytes.toString(), 'to-stderr\n');
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('stdin is piped in and its EOF reaches the container; fifo:// prefix accepted', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const [stdin, stdout] = mkfifos(dir, 'in', 'out');
    const io = await createProcessIO(
      { stdin: `fifo://${stdin}`, stdout: `fifo://${stdout}`, stderr: '', terminal: false },
      { id: 'c1', namespace: NS }
    );
    assert.equal(io.runcStdio()[2], 'ignore');
    const out = readFifo(stdout);
    const writer = writeFifo(stdin);
    const child = await runContainer(io, 'cat; echo after-eof');
    writer.end('line one\nline two\n');
    await once(writer, 'close');
    // The client closed its end, but the shim's keep-alive writer keeps stdin open (CloseIO not sent).
    await sleep(300);
    assert.equal(child.exitCode, null, 'container saw stdin EOF before CloseIO');
    io.closeStdin();
    io.closeStdin(); // repeated CloseIO is harmless
    assert.equal(await exitOf(child), 0);
    assert.equal(await io.waitDrained(5000), true);
    assert.equal((await out.done).toString(), 'line one\nline two\nafter-eof\n');
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('CloseIO before the client ever opened stdin ends the container stdin', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const [stdin, stdout] = mkfifos(dir, 'in', 'out');
    const io = await createProcessIO({ stdin, stdout, stderr: '', terminal: false }, { id: 'c1', namespace: NS });
    const out = readFifo(stdout);
    const child = await runContainer(io, 'wc -c');
    await sleep(100);
    assert.equal(child.exitCode, null);
    io.closeStdin();
    assert.equal(await exitOf(child), 0);
    await io.waitDrained(5000);
    assert.equal((await out.done).toString().trim(), '0');
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test(
  'stdout reader vanishes mid-stream: no crash, stderr unaffected, a new reader gets the rest',
  { timeout: 30_000 },
  () =>
    noFdLeak(async () => {
      const dir = tmpDir();
      const [stdout, stderr] = mkfifos(dir, 'out', 'err');
      const payload = randomBytes(1024 * 1024);
      const payloadFile = path.join(dir, 'payload');
      fs.writeFileSync(payloadFile, payload);
      const { log, entries } = recordingLog();
      const io = await createProcessIO(
        { stdin: '', stdout, stderr, terminal: false },
        { id: 'c1', namespace: NS, log }
      );
      const err = readFifo(stderr);
      const first = readFifo(stdout);
      const child = await runContainer(io, `echo before >&2; cat ${payloadFile}; echo after >&2`);
      // First reader (containerd) goes away after its first chunk.
      await once(first.sock, 'data');
      first.sock.destroy();
      await first.done;
      await sleep(300);
      assert.equal(child.exitCode, null, 'container should be held by back-pressure, not fail');
      assert.equal(Buffer.concat(err.chunks).toString(), 'before\n');
      // containerd restarted: a new reader picks up exactly where the old one stopped.
      const second = readFifo(stdout);
      assert.equal(await exitOf(child), 0);
      assert.equal(await io.waitDrained(5000), true);
      const got = Buffer.concat([...first.chunks, await second.done]);
      assert.equal(got.length, payload.length);
      assert.equal(sha256(got), sha256(payload));
      assert.equal((await err.done).toString(), 'before\nafter\n');
      assert.deepEqual(
        entries.filter((e) => e.level === 'warn'),
        []
      );
      await io.close();
      fs.rmSync(dir, { recursive: true });
    })
);

test('a failing destination drops that stream, logs once, and never blocks the container', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    // /dev/full: every write fails with ENOSPC, like a destination that is gone for good.
    const dir = tmpDir();
    const [stderr] = mkfifos(dir, 'err');
    const { log, entries } = recordingLog();
    const io = await createProcessIO(
      { stdin: '', stdout: '/dev/full', stderr, terminal: false },
      { id: 'c1', namespace: NS, log }
    );
    const err = readFifo(stderr);
    const child = await runContainer(io, 'head -c 4000000 /dev/zero; echo done >&2');
    assert.equal(await exitOf(child), 0);
    assert.equal(await io.waitDrained(5000), true);
    assert.equal((await err.done).toString(), 'done\n');
    const warns = entries.filter((e) => e.level === 'warn');
    assert.equal(warns.length, 1, JSON.stringify(entries));
    assert.match(warns[0].msg, /stdout: destination failed/);
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('pump: EPIPE on the destination is logged once and the source is still drained', { timeout: 30_000 }, async () => {
  const [srcR, srcW] = sys.pipe2();
  const [dstR, dstW] = sys.pipe2();
  fs.closeSync(dstR); // reader gone: every write gets EPIPE
  const src = new net.Socket({ fd: srcR, readable: true, writable: false });
  const dst = new net.Socket({ fd: dstW, readable: false, writable: true });
  const { log, entries } = recordingLog();
  const done = pump(src, dst, { name: 'stdout', log });
  const writer = new net.Socket({ fd: srcW, readable: false, writable: true });
  for (let i = 0; i < 64; i++) writer.write(Buffer.alloc(32 * 1024, i));
  writer.end();
  const result = await done;
  assert.equal(result.bytesRead, 64 * 32 * 1024);
  assert.ok(result.bytesDropped > 0);
  assert.equal(entries.length, 1);
  assert.match(entries[0].msg, /dropping/);
});

test(
  'a child that opens /dev/stdout and /dev/stderr itself can write (real pipes, not sockets)',
  { timeout: 30_000 },
  () =>
    noFdLeak(async () => {
      const dir = tmpDir();
      const [stdout, stderr] = mkfifos(dir, 'out', 'err');
      const io = await createProcessIO({ stdin: '', stdout, stderr, terminal: false }, { id: 'c1', namespace: NS });
      const out = readFifo(stdout);
      const err = readFifo(stderr);
      const child = await runContainer(io, 'echo via-dev-stdout > /dev/stdout && echo via-dev-stderr > /dev/stderr');
      assert.equal(await exitOf(child), 0);
      await io.waitDrained(5000);
      assert.equal((await out.done).toString(), 'via-dev-stdout\n');
      assert.equal((await err.done).toString(), 'via-dev-stderr\n');
      await io.close();
      fs.rmSync(dir, { recursive: true });
    })
);

test('file:// creates the directories and appends stdout and stderr to the one file', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'a', 'b', 'ctr.log');
    for (const round of [1, 2]) {
      const io = await createProcessIO(
        { stdin: '', stdout: `file://${file}`, stderr: `file://${dir}/ignored.log`, terminal: false },
        { id: 'c1', namespace: NS }
      );
      const child = await runContainer(io, `echo out-${round}; sleep 0.05; echo err-${round} >&2`);
      assert.equal(await exitOf(child), 0);
      assert.equal(await io.waitDrained(5000), true);
      await io.close();
    }
    assert.equal(fs.readFileSync(file, 'utf8'), 'out-1\nerr-1\nout-2\nerr-2\n');
    assert.equal(fs.statSync(file).mode & 0o777, 0o644 & ~process.umask());
    assert.equal(fs.existsSync(path.join(dir, 'ignored.log')), false);
    fs.rmSync(dir, { recursive: true });
  })
);

test('null IO: all streams empty means /dev/null everywhere and nothing to drain', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const io = await createProcessIO(
      { stdin: '', stdout: '', stderr: '', terminal: false },
      { id: 'c1', namespace: NS }
    );
    assert.deepEqual(io.runcStdio(), ['ignore', 'ignore', 'ignore']);
    const child = await runContainer(io, 'echo lost; cat');
    assert.equal(await exitOf(child), 0);
    assert.equal(await io.waitDrained(100), true);
    await io.close();
  })
);

test('ioUid/ioGid: the container-side pipe ends are chowned', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const [stdin, stdout] = mkfifos(dir, 'in', 'out');
    const io = await createProcessIO(
      { stdin, stdout, stderr: '', terminal: false },
      { id: 'c1', namespace: NS, ioUid: 1234, ioGid: 5678 }
    );
    const [inFd, outFd] = io.runcStdio() as number[];
    for (const fd of [inFd, outFd]) {
      const st = fs.fstatSync(fd);
      assert.equal(st.isFIFO(), true);
      assert.deepEqual([st.uid, st.gid], [1234, 5678]);
    }
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

const LOGGER = `#!/bin/sh
# args: dir <dir> [mode <mode>]
dir=$2
echo "$$" > "$dir/pid"
/bin/cat /proc/$$/environ > "$dir/env"
echo "$*" > "$dir/args"
/bin/ls /proc/$$/fd > "$dir/fds"
trap 'echo term > "$dir/term"; exit 0' TERM
/bin/cat <&3 > "$dir/out" &
/bin/cat <&4 > "$dir/err" &
exec 3<&- 4<&-
echo ready >&5
exec 5>&-
if [ "$4" = linger ]; then while :; do /bin/sleep 0.05; done; fi
wait
`;

test(
  'binary:// starts the logger with fds 3/4/5 and its env, waits for ready, output reaches it',
  { timeout: 30_000 },
  () =>
    noFdLeak(async () => {
      const dir = tmpDir();
      const logger = path.join(dir, 'logger.sh');
      fs.writeFileSync(logger, LOGGER, { mode: 0o755 });
      const io = await createProcessIO(
        { stdin: '', stdout: `binary://${logger}?dir=${encodeURIComponent(dir)}`, stderr: '', terminal: false },
        { id: 'c1', execId: 'e1', namespace: NS }
      );
      // ready was awaited: the logger already wrote its env file
      const env = fs.readFileSync(path.join(dir, 'env'), 'utf8').split('\0').filter(Boolean).sort();
      assert.deepEqual(env, ['CONTAINER_ID=e1', `CONTAINER_NAMESPACE=${NS}`]);
      assert.equal(fs.readFileSync(path.join(dir, 'args'), 'utf8'), `dir ${dir}\n`);
      assert.deepEqual(
        fs
          .readFileSync(path.join(dir, 'fds'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map(Number)
          .filter((n) => n <= 5),
        [0, 1, 2, 3, 4, 5]
      );
      const child = await runContainer(io, 'echo hello; echo oops >&2');
      assert.equal(await exitOf(child), 0);
      assert.equal(await io.waitDrained(1000), true);
      // Our write ends are closed after start, so the logger sees EOF and finishes on its own.
      const pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
      for (let i = 0; i < 100 && sys.processExists(pid) && !isZombie(pid); i++) await sleep(20);
      assert.equal(fs.readFileSync(path.join(dir, 'out'), 'utf8'), 'hello\n');
      assert.equal(fs.readFileSync(path.join(dir, 'err'), 'utf8'), 'oops\n');
      await io.close();
      assert.equal(fs.existsSync(path.join(dir, 'term')), false);
      fs.rmSync(dir, { recursive: true });
    })
);

test('binary:// close() sends SIGTERM to a logger that is still running', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const logger = path.join(dir, 'logger.sh');
    fs.writeFileSync(logger, LOGGER, { mode: 0o755 });
    const io = await createProcessIO(
      { stdin: '', stdout: `binary://${logger}?dir=${dir}&mode=linger`, stderr: '', terminal: false },
      { id: 'c1', namespace: NS }
    );
    const pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
    const child = await runContainer(io, 'echo x');
    await exitOf(child);
    const t0 = Date.now();
    await io.close();
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(fs.readFileSync(path.join(dir, 'term'), 'utf8'), 'term\n');
    assert.equal(sys.processExists(pid), false);
    fs.rmSync(dir, { recursive: true });
  })
);

test('binary:// with a missing executable fails clearly and releases everything', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    await assert.rejects(
      createProcessIO(
        { stdin: '', stdout: 'binary:///nonexistent/logger', stderr: '', terminal: false },
        { id: 'c1', namespace: NS }
      ),
      /failed to start logging binary \/nonexistent\/logger/
    );
  })
);

test('URI parsing: modes and malformed URIs', { timeout: 30_000 }, async () => {
  const cfg = (stdout: string) => ({ stdin: '', stdout, stderr: '', terminal: false });
  assert.deepEqual(parseOutputTarget(cfg('/run/fifo/x-stdout')), { kind: 'fifo' });
  assert.deepEqual(parseOutputTarget(cfg('fifo:///run/fifo/x-stdout')), { kind: 'fifo' });
  assert.deepEqual(parseOutputTarget({ stdin: '', stdout: '', stderr: '', terminal: false }), { kind: 'null' });
  assert.deepEqual(parseOutputTarget(cfg('binary:///usr/bin/log%20ger?foo=bar&x=1&flag')), {
    kind: 'binary',
    binary: '/usr/bin/log ger',
    args: ['foo', 'bar', 'x', '1', 'flag', ''],
  });
  assert.deepEqual(parseOutputTarget(cfg('file:///var/log/c.log')), { kind: 'file', file: '/var/log/c.log' });
  for (const [bad, re] of [
    ['gopher:///x', /unknown STDIO scheme gopher/],
    ['binary://', /absolute file path/],
    ['binary:///', /absolute file path/],
    ['binary://somehost/bin/logger', /expected binary:\/\/\/absolute\/path, got host "somehost"/],
    ['file://relative.log', /expected file:\/\/\/absolute\/path/],
    ['file:///var/log/', /absolute file path/],
    ['file:///var/log/x?y=1', /takes no query/],
    ['binary:///bin/%zz', /bad percent-encoding/],
  ] as const) {
    assert.throws(
      () => parseOutputTarget(cfg(bad)),
      (err: unknown) => err instanceof StdioUriError && re.test((err as Error).message),
      bad
    );
  }
  await noFdLeak(() =>
    assert.rejects(createProcessIO(cfg('gopher:///x'), { id: 'c1', namespace: NS }), /unknown STDIO scheme gopher/)
  );
});

test('a missing stdout path fails with the path in the error and leaks nothing', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const dir = tmpDir();
    const [stdin] = mkfifos(dir, 'in');
    await assert.rejects(
      createProcessIO(
        { stdin, stdout: path.join(dir, 'nope'), stderr: '', terminal: false },
        { id: 'c1', namespace: NS }
      ),
      /opening stdout file ".*nope" failed: ENOENT/
    );
    fs.rmSync(dir, { recursive: true });
  })
);

function isZombie(pid: number): boolean {
  try {
    return /\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
