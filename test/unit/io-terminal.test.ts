// Terminal mode of src/task/io with a fake runc: a python3 helper that makes a pty, starts the
// "container" on the slave as its controlling terminal, and sends the master over the console socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { noFdLeak } from '../support/proc';
import { sleep } from '../support/wait';
import { createProcessIO, type ProcessIO } from '../../src/task/io';

const { O_RDONLY, O_WRONLY, O_NONBLOCK } = fs.constants;
const NS = 'unit-ns';

const FAKE_RUNC = `
import fcntl, os, socket, subprocess, sys, termios
sock_path, script = sys.argv[1], sys.argv[2]
master, slave = os.openpty()
name = os.ttyname(slave)
def become_session_leader():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen(['/bin/sh', '-c', script], stdin=slave, stdout=slave, stderr=slave,
                     preexec_fn=become_session_leader, close_fds=True)
os.close(slave)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sock_path)
socket.send_fds(c, [name.encode()], [master])
c.close()
os.close(master)
print(p.pid, flush=True)
`;

function setup(): { dir: string; helper: string; fifo: (n: string) => string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-tty-'));
  const helper = path.join(dir, 'fake-runc.py');
  fs.writeFileSync(helper, FAKE_RUNC);
  const fifo = (n: string) => {
    const p = path.join(dir, n);
    execFileSync('mkfifo', [p]);
    return p;
  };
  return { dir, helper, fifo };
}

/** Runs the fake runc against the process IO's console socket; returns the container's pid. */
async function fakeRunc(io: ProcessIO, helper: string, script: string): Promise<number> {
  assert.ok(io.consoleSocketPath);
  const runc = spawn('python3', [helper, io.consoleSocketPath, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  runc.stdout.on('data', (d) => (out += d));
  const [code] = await once(runc, 'exit');
  assert.equal(code, 0, 'fake runc failed');
  await io.afterRuncStarted();
  await io.receiveConsole();
  return Number(out.trim());
}

function reader(p: string): { text: () => string; done: Promise<string>; until: (re: RegExp) => Promise<void> } {
  const sock = new net.Socket({ fd: fs.openSync(p, O_RDONLY | O_NONBLOCK), readable: true, writable: false });
  let text = '';
  sock.on('data', (d) => (text += d));
  const done = new Promise<string>((resolve) => sock.on('close', () => resolve(text)));
  const until = async (re: RegExp) => {
    for (let i = 0; i < 250 && !re.test(text); i++) await sleep(20);
    assert.match(text, re);
  };
  return { text: () => text, done, until };
}

function gone(pid: number): boolean {
  try {
    return /\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

test(
  'terminal: console socket, pty master received, stdin -> master, master -> stdout, resize',
  { timeout: 30_000 },
  () =>
    noFdLeak(async () => {
      const { dir, helper, fifo } = setup();
      const stdin = fifo('in');
      const stdout = fifo('out');
      const io = await createProcessIO({ stdin, stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
      assert.deepEqual(io.runcStdio(), ['ignore', 'ignore', 'ignore']);
      const sockPath = io.consoleSocketPath!;
      assert.ok(Buffer.byteLength(sockPath) < 108);
      assert.ok(fs.statSync(sockPath).isSocket());
      const out = reader(stdout);
      const input = new net.Socket({ fd: fs.openSync(stdin, O_WRONLY | O_NONBLOCK), readable: false, writable: true });

      const pid = await fakeRunc(io, helper, 'stty size; read a; stty size; echo "got-$a"; read b; echo never');
      // the console socket is gone once the master arrived
      assert.equal(fs.existsSync(path.dirname(sockPath)), false);
      await out.until(/^0 0\r\n/);
      io.resize(100, 40);
      input.write('go\n');
      await out.until(/40 100\r\ngot-go\r\n/);

      // Client closes its stdin, then CloseIO: stdin EOF shuts the console down (Go behaviour), the
      // container's session gets a hangup and the output copy ends.
      input.end();
      await once(input, 'close');
      await sleep(100);
      assert.equal(gone(pid), false, 'container must survive until CloseIO');
      io.closeStdin();
      assert.equal(await io.waitDrained(5000), true);
      for (let i = 0; i < 100 && !gone(pid); i++) await sleep(20);
      assert.equal(gone(pid), true, 'container did not get a hangup');
      assert.doesNotMatch(await out.done, /never/);
      assert.throws(() => io.resize(80, 24), /console not available/);
      await io.close();
      fs.rmSync(dir, { recursive: true });
    })
);

test('terminal: output written just before exit is drained (EIO ends the copy), no stdin', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const { dir, helper, fifo } = setup();
    const stdout = fifo('out');
    const io = await createProcessIO({ stdin: '', stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
    const out = reader(stdout);
    const pid = await fakeRunc(
      io,
      helper,
      'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo last-line'
    );
    assert.equal(await io.waitDrained(10_000), true);
    assert.equal(io.outputDrained(), true, 'told without waiting once drained');
    const text = await out.done;
    assert.match(text, /line 1999\r\nlast-line\r\n$/);
    assert.equal(text.split('\r\n').length - 1, 2001);
    for (let i = 0; i < 100 && !gone(pid); i++) await sleep(20);
    // the master stays usable (not closed) until close(): resize still works after EIO
    io.resize(120, 50);
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('terminal: close() before runc ever connected releases the socket dir and fds', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const { dir, fifo } = setup();
    const stdout = fifo('out');
    const io = await createProcessIO({ stdin: '', stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
    const sockDir = path.dirname(io.consoleSocketPath!);
    assert.equal(fs.existsSync(sockDir), true);
    await io.close();
    assert.equal(fs.existsSync(sockDir), false);
    await assert.rejects(io.receiveConsole(), /closed/);
    fs.rmSync(dir, { recursive: true });
  })
);

test('terminal: file:// is refused with a clear error', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    await assert.rejects(
      createProcessIO(
        { stdin: '', stdout: 'file:///tmp/x.log', stderr: '', terminal: true },
        { id: 'c1', namespace: NS }
      ),
      /file:\/\/ stdio is not supported with a terminal/
    );
  })
);

test('terminal + binary:// feeds the logger fd 3 from the master', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const { dir, helper } = setup();
    const logger = path.join(dir, 'logger.sh');
    // Signals ready by closing fd 5 (before starting cat, which would otherwise inherit it).
    fs.writeFileSync(logger, `#!/bin/sh\nexec 5>&-\nexec /bin/cat <&3 > "$2/out"\n`, { mode: 0o755 });
    const io = await createProcessIO(
      { stdin: '', stdout: `binary://${logger}?dir=${dir}`, stderr: '', terminal: true },
      { id: 'c1', namespace: NS }
    );
    await fakeRunc(io, helper, 'echo from-tty');
    assert.equal(await io.waitDrained(5000), true);
    // the logger sees EOF on fd 3 once the copy ended, so cat finishes by itself (close() would SIGTERM it)
    const outFile = path.join(dir, 'out');
    for (let i = 0; i < 100 && fs.readFileSync(outFile, 'utf8') === ''; i++) await sleep(20);
    assert.equal(fs.readFileSync(outFile, 'utf8'), 'from-tty\r\n');
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('terminal: receiveConsole() may start before runc runs (as the Task service does)', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const { dir, helper, fifo } = setup();
    const stdout = fifo('out');
    const io = await createProcessIO({ stdin: '', stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
    const out = reader(stdout);
    const receiving = io.receiveConsole();
    await sleep(200); // runc is slow to connect: no timeout fires on our side
    const runc = spawn('python3', [helper, io.consoleSocketPath!, 'echo early-bird'], { stdio: 'ignore' });
    assert.equal((await once(runc, 'exit'))[0], 0);
    await receiving;
    assert.equal(await io.waitDrained(5000), true);
    assert.equal(await out.done, 'early-bird\r\n');
    await io.close();
    fs.rmSync(dir, { recursive: true });
  })
);

test('terminal: close() ends a pending receiveConsole() without an unhandled rejection', { timeout: 30_000 }, () =>
  noFdLeak(async () => {
    const { dir, fifo } = setup();
    const stdout = fifo('out');
    const io = await createProcessIO({ stdin: '', stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      void io.receiveConsole(); // runc "failed": nobody awaits this promise
      await sleep(20);
      await io.close();
      await sleep(100);
      assert.deepEqual(unhandled, []);
      await assert.rejects(io.receiveConsole(), /console socket closed/);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    fs.rmSync(dir, { recursive: true });
  })
);

test(
  'terminal: a resize before runc sent the master is kept and applied once the master arrives',
  { timeout: 30_000 },
  () =>
    noFdLeak(async () => {
      const { dir, helper, fifo } = setup();
      const stdin = fifo('in');
      const stdout = fifo('out');
      const io = await createProcessIO({ stdin, stdout, stderr: '', terminal: true }, { id: 'c1', namespace: NS });
      const out = reader(stdout);
      const input = new net.Socket({ fd: fs.openSync(stdin, O_WRONLY | O_NONBLOCK), readable: false, writable: true });
      // ResizePty between Exec and Start (or while runc runs): no master yet. The last size wins.
      io.resize(90, 30);
      io.resize(111, 33);
      // The "container" asks for its size only after the test has seen the master arrive.
      await fakeRunc(io, helper, 'read a; stty size');
      input.write('go\n');
      await out.until(/33 111\r\n/);
      input.end();
      await io.close();
      fs.rmSync(dir, { recursive: true });
    })
);

test(
  'no terminal: resize succeeds and does nothing (the Go shim answers OK without a console)',
  { timeout: 30_000 },
  async () => {
    const io = await createProcessIO(
      { stdin: '', stdout: '', stderr: '', terminal: false },
      { id: 'c1', namespace: NS }
    );
    io.resize(80, 24);
    await io.close();
  }
);
