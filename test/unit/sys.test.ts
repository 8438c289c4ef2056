import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import * as sys from '../../src/sys/libc';

const tmp = (p: string) => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-sys-')), p);

test('pipe2 round trip, cloexec by default, nonblock on request', () => {
  const [r, w] = sys.pipe2();
  try {
    assert.ok(sys.isCloexec(r) && sys.isCloexec(w));
    assert.equal(sys.isNonBlocking(r), false);
    fs.writeSync(w, 'hello');
    const buf = Buffer.alloc(16);
    assert.equal(fs.readSync(r, buf, 0, 16, null), 5);
    assert.equal(buf.subarray(0, 5).toString(), 'hello');
    sys.setNonBlocking(r, true);
    assert.equal(sys.isNonBlocking(r), true);
    assert.throws(() => fs.readSync(r, buf, 0, 16, null), { code: 'EAGAIN' });
    sys.setNonBlocking(r, false);
    assert.equal(sys.isNonBlocking(r), false);
    sys.setCloexec(r, false);
    assert.equal(sys.isCloexec(r), false);
  } finally {
    sys.close(r);
    sys.close(w);
  }
  const [r2, w2] = sys.pipe2({ cloexec: false, nonblock: true });
  assert.equal(sys.isCloexec(r2), false);
  assert.equal(sys.isNonBlocking(w2), true);
  sys.close(r2);
  sys.close(w2);
});

test('close reports errno as SysError code', () => {
  assert.throws(
    () => sys.close(987654),
    (e: unknown) => {
      assert.ok(e instanceof sys.SysError);
      assert.equal(e.code, 'EBADF');
      assert.equal(e.errno, os.constants.errno.EBADF);
      return true;
    }
  );
});

test('dupCloexec copies an fd (same pipe), close-on-exec; setCloexec turns that off and on', () => {
  const [r, w] = sys.pipe2();
  const copy = sys.dupCloexec(w);
  assert.notEqual(copy, w);
  fs.writeSync(copy, 'x');
  const buf = Buffer.alloc(1);
  assert.equal(fs.readSync(r, buf, 0, 1, null), 1);
  assert.equal(sys.isCloexec(copy), true);
  sys.setCloexec(copy, false);
  assert.equal(sys.isCloexec(copy), false);
  sys.setCloexec(copy, true);
  assert.equal(sys.isCloexec(copy), true);
  for (const fd of [r, w, copy]) sys.close(fd);
});

test('mkfifo makes a FIFO (mode less the umask), and an existing path is a SysError EEXIST', () => {
  const file = tmp('fifo');
  sys.mkfifo(file, 0o600);
  const st = fs.statSync(file);
  assert.ok(st.isFIFO());
  assert.equal(st.mode & 0o777 & ~0o600, 0, `mode ${(st.mode & 0o777).toString(8)}`);
  assert.throws(() => sys.mkfifo(file, 0o600), { name: 'SysError', code: 'EEXIST' });
  fs.rmSync(path.dirname(file), { recursive: true });
});

test('decodeWaitStatus: exit code or 128+signal', () => {
  assert.equal(sys.decodeWaitStatus(0), 0);
  assert.equal(sys.decodeWaitStatus(7 << 8), 7);
  assert.equal(sys.decodeWaitStatus(255 << 8), 255);
  assert.equal(sys.decodeWaitStatus(9), 137);
  assert.equal(sys.decodeWaitStatus(15 | 0x80 /* core dumped */), 143);
});

test('eventfd counts writes and reads back the sum', () => {
  const efd = sys.eventfd(2, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  try {
    assert.ok(sys.isCloexec(efd));
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(5n);
    fs.writeSync(efd, one);
    const out = Buffer.alloc(8);
    assert.equal(fs.readSync(efd, out, 0, 8, null), 8);
    assert.equal(out.readBigUInt64LE(), 7n);
    assert.throws(() => fs.readSync(efd, out, 0, 8, null), { code: 'EAGAIN' });
  } finally {
    sys.close(efd);
  }
});

test('waitpidNoHang: null while running, raw status after exit, null (ECHILD) for strangers', async () => {
  assert.throws(() => sys.waitpidNoHang(-1), RangeError);
  assert.equal(sys.waitpidNoHang(1), null); // pid 1 is not our child: ECHILD -> null
  // Detached child not owned by libuv: spawn a shell that backgrounds a child and prints its pid.
  // The grandchild is not ours, so waitpid must answer null (ECHILD).
  const r = spawnSync('/bin/sh', ['-c', 'sleep 5 & echo $!'], { encoding: 'utf8' });
  const stranger = Number(r.stdout.trim());
  assert.ok(stranger > 0);
  assert.equal(sys.waitpidNoHang(stranger), null);
  process.kill(stranger, 'SIGKILL');
  assert.equal(sys.processExists(999999999), false);
  assert.equal(sys.processExists(process.pid), true);
});

test('waitpidNoHang reaps an exited child and decodes exit code and signal', async () => {
  // Run in a child node so this test process's libuv does not race us for the status.
  const script = `
    const { spawn } = require('child_process');
    const sys = require(${JSON.stringify(require.resolve('../../src/sys/libc'))});
    sys.setChildSubreaper();
    if (!sys.isChildSubreaper()) throw new Error('not subreaper');
    // grandchildren: orphaned to us once the intermediate shell exits
    const sh = spawn('/bin/sh', ['-c', 'sleep 0.1 & echo $!; (sleep 0.1; exit 7) & echo $!'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    sh.stdout.on('data', d => out += d);
    sh.on('exit', () => {
      const [killed, seven] = out.trim().split('\\n').map(Number);
      if (sys.waitpidNoHang(seven) !== null) throw new Error('reaped a running child');
      process.kill(killed, 'SIGKILL');
      const deadline = Date.now() + 5000;
      const got = {};
      const poll = () => {
        for (const pid of [killed, seven]) {
          if (got[pid] !== undefined) continue;
          const r = sys.waitpidNoHang(pid);
          if (r) got[pid] = sys.decodeWaitStatus(r.status);
        }
        if (got[killed] !== undefined && got[seven] !== undefined) {
          console.log(JSON.stringify([got[killed], got[seven]]));
          return;
        }
        if (Date.now() > deadline) throw new Error('timeout');
        setTimeout(poll, 10);
      };
      poll();
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim()), [137, 7]);
});

test('peerCred on a unix socket connection reports our own pid/uid/gid', async () => {
  const sockPath = tmp('peer.sock');
  const server = net.createServer();
  await new Promise<void>((res) => server.listen(sockPath, res));
  try {
    const accepted = new Promise<net.Socket>((res) => server.once('connection', res));
    const client = net.connect(sockPath);
    const conn = await accepted;
    const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
    const cred = sys.peerCred(fd);
    assert.deepEqual(cred, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    client.destroy();
    conn.destroy();
  } finally {
    server.close();
  }
});

test('peerCred sees another process as the peer', async () => {
  const sockPath = tmp('peer2.sock');
  const server = net.createServer();
  await new Promise<void>((res) => server.listen(sockPath, res));
  try {
    const accepted = new Promise<net.Socket>((res) => server.once('connection', res));
    const child = spawn('python3', [
      '-c',
      `import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(${JSON.stringify(sockPath)})\ntime.sleep(1)`,
    ]);
    const conn = await accepted;
    const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
    assert.equal(sys.peerCred(fd).pid, child.pid);
    conn.destroy();
    child.kill('SIGKILL');
    await new Promise((res) => child.once('exit', res));
  } finally {
    server.close();
  }
});

test('recvFd receives an fd sent with SCM_RIGHTS (EAGAIN before it arrives)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-recvfd-'));
  const sockPath = path.join(dir, 'fd.sock');
  const payloadPath = path.join(dir, 'payload.txt');
  fs.writeFileSync(payloadPath, 'passed through SCM_RIGHTS');
  // pauseOnConnect: libuv must never start reading this socket, or it would swallow the message and
  // close the fd. (socket.pause() is NOT enough: the handle keeps reading.)
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((res) => server.listen(sockPath, res));
  try {
    const accepted = new Promise<net.Socket>((res) => server.once('connection', res));
    const child = spawn(
      'python3',
      [
        '-c',
        [
          'import socket,os,sys,time',
          's=socket.socket(socket.AF_UNIX)',
          `s.connect(${JSON.stringify(sockPath)})`,
          'sys.stdin.read(1)', // wait until the test saw EAGAIN
          `f=os.open(${JSON.stringify(payloadPath)}, os.O_RDONLY)`,
          'socket.send_fds(s,[b"x"],[f])',
          'time.sleep(0.5)',
        ].join('\n'),
      ],
      { stdio: ['pipe', 'inherit', 'inherit'] }
    );
    const conn = await accepted;
    const sockFd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
    try {
      assert.throws(() => sys.recvFd(sockFd), { code: 'EAGAIN' });
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    child.stdin!.write('g');
    let got = -1;
    for (let i = 0; i < 200 && got < 0; i++) {
      try {
        got = sys.recvFd(sockFd);
      } catch (e) {
        if ((e as { code?: string }).code !== 'EAGAIN') throw e;
        await new Promise((res) => setTimeout(res, 10));
      }
    }
    assert.ok(got >= 0, 'no fd received');
    assert.ok(sys.isCloexec(got), 'received fd must be close-on-exec');
    const buf = Buffer.alloc(64);
    const n = fs.readSync(got, buf, 0, 64, 0);
    assert.equal(buf.subarray(0, n).toString(), 'passed through SCM_RIGHTS');
    sys.close(got);
    child.stdin!.end();
    await new Promise((res) => child.once('exit', res));
    // peer gone, nothing sent: EOF
    assert.throws(() => sys.recvFd(sockFd), { code: 'EOF' });
    conn.destroy();
  } finally {
    server.close();
  }
});

test('setWinsize resizes a pty; the program inside sees the new size', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the native addon loads only for this test
  const pty = require('node-pty') as typeof import('node-pty');
  const term = pty.spawn('/bin/sh', ['-c', 'read x; stty size'], { cols: 80, rows: 24 });
  const fd = (term as unknown as { _fd: number })._fd;
  let out = '';
  term.onData((d) => {
    out += d;
  });
  const exited = new Promise<void>((res) => term.onExit(() => res()));
  assert.deepEqual(sys.getWinsize(fd), { rows: 24, cols: 80 });
  sys.setWinsize(fd, 33, 101);
  assert.deepEqual(sys.getWinsize(fd), { rows: 33, cols: 101 });
  term.write('\n');
  // node-pty may report exit before the last output chunk: wait for the size line itself.
  const deadline = Date.now() + 5000;
  while (!/\d+ \d+\s*$/.test(out) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  assert.match(out, /33 101/);
  await Promise.race([exited, new Promise((res) => setTimeout(res, 2000))]);
  assert.throws(() => sys.setWinsize(987654, 1, 1), { code: 'EBADF' });
});
