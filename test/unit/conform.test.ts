// What containerd's own clients and tools expect of a drop-in shim (issue 13): legacy runtime
// options, the runc shim's grouping annotation, early ResizePty, the log fifo a grouped shim writes
// to, its /proc cmdline, the CLI's help, and no dependency that nothing uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { containerd, google } from '../../src/gen/proto';
import { decodeOptions, KNOWN_OPTION_TYPES } from '../../src/task/options';
import { startOptions } from '../../src/shim/start-options';
import { readConfig } from '../../src/shim/config';
import { groupKey, GROUP_ANNOTATIONS } from '../../src/shim/address';
import { parseFlags } from '../../src/shim/flags';
import { BundleLogSink, createLogger, DEFERRED_LINE_DELAY_MS } from '../../src/sys/logger';
import { splitCmdline } from '../../src/shim/proc-title';
import { ExecProcess } from '../../src/task/process';
import type { ProcessIO } from '../../src/task/io';

const repo = path.resolve(__dirname, '../../..');

function legacyCreateOptions(fields: Partial<containerd.linux.runc.ICreateOptions>): {
  type_url: string;
  value: Uint8Array;
} {
  return {
    type_url: 'containerd.linux.runc.CreateOptions',
    value: containerd.linux.runc.CreateOptions.encode(fields).finish(),
  };
}

test('legacy containerd.linux.runc.CreateOptions: every field a v2 shim has a use for is decoded', () => {
  const o = decodeOptions(
    legacyCreateOptions({
      no_pivot_root: true,
      no_new_keyring: true,
      shim_cgroup: '/tsshim-test',
      io_uid: 1234,
      io_gid: 5678,
      criu_work_path: '/w',
      criu_image_path: '/i',
      open_tcp: true,
      empty_namespaces: ['network'],
    })
  );
  assert.equal(o.noPivotRoot, true);
  assert.equal(o.noNewKeyring, true);
  assert.equal(o.shimCgroup, '/tsshim-test');
  assert.equal(o.ioUid, 1234);
  assert.equal(o.ioGid, 5678);
  assert.equal(o.criuWorkPath, '/w');
  assert.equal(o.criuImagePath, '/i');
  assert.equal(o.binaryName, '', 'runc from PATH, as without options');
  // The Go client may send it with the types.containerd.io prefix too.
  assert.equal(
    decodeOptions({
      ...legacyCreateOptions({ io_uid: 7 }),
      type_url: 'types.containerd.io/containerd.linux.runc.CreateOptions',
    }).ioUid,
    7
  );
  assert.ok(KNOWN_OPTION_TYPES.includes('containerd.linux.runc.CreateOptions'), 'no "unknown options type" warning');
});

test('legacy containerd.linux.runc.RuncOptions: runtime binary, root, criu, systemd cgroups', () => {
  const value = containerd.linux.runc.RuncOptions.encode({
    runtime: 'crun',
    runtime_root: '/r',
    criu_path: '/c',
    systemd_cgroup: true,
  }).finish();
  const o = decodeOptions({ type_url: 'containerd.linux.runc.RuncOptions', value });
  assert.deepEqual([o.binaryName, o.root, o.criuPath, o.systemdCgroup], ['crun', '/r', '/c', true]);
});

test('start options (Node start and spares call the same function): shim_cgroup of the legacy message', () => {
  const any = google.protobuf.Any.encode(legacyCreateOptions({ shim_cgroup: '/pod-a', io_uid: 1 })).finish();
  const flags = parseFlags(['-namespace', 'n', '-id', 'c', '-address', '/a', 'start']);
  assert.deepEqual(startOptions(Buffer.from(any), flags, readConfig({})), { perNode: false, shimCgroup: '/pod-a' });
  assert.deepEqual(startOptions(Buffer.from(any), flags, readConfig({ TSSHIM_PER_NODE: '1' })), {
    perNode: true,
    shimCgroup: '/pod-a',
  });
});

test('group key: the runc shim annotation groups like ours, after ours and before the CRI sandbox id', () => {
  const RUNC = 'io.containerd.runc.v2.group';
  assert.equal(groupKey('c1', { [RUNC]: 'g' }), 'g');
  assert.equal(groupKey('c1', { 'io.containerd.tsshim.v2.group': 't', [RUNC]: 'g' }), 't');
  assert.equal(groupKey('c1', { [RUNC]: 'g', 'io.kubernetes.cri.sandbox-id': 'pod' }), 'g');
  assert.equal(
    groupKey('c1', { [RUNC]: '', 'io.kubernetes.cri.sandbox-id': 'pod' }),
    'pod',
    'empty: the next one decides'
  );
  assert.equal(groupKey('c1', {}), 'c1');
  assert.deepEqual([...GROUP_ANNOTATIONS], ['io.containerd.tsshim.v2.group', RUNC, 'io.kubernetes.cri.sandbox-id']);
});

// The sh's group_of is checked against groupKey over a corpus in sh-wrapper.test.ts.

test('early ResizePty: a size asked for before the process IO exists reaches the IO when it is set', () => {
  const p = new ExecProcess('c1', 'e1', { stdin: '', stdout: '', stderr: '', terminal: true }, {});
  const sizes: [number, number][] = [];
  const io = { resize: (w: number, h: number) => sizes.push([w, h]) } as unknown as ProcessIO;
  p.resize(100, 30); // Exec, ResizePty, then Start
  p.resize(120, 40);
  assert.deepEqual(sizes, []);
  assert.deepEqual(p.spec.consoleSize, { height: 40, width: 120 }, 'runc sizes the pty before the process runs');
  p.io = io;
  assert.deepEqual(sizes, [[120, 40]], 'the latest early size, once');
  p.resize(80, 24);
  assert.deepEqual(sizes, [
    [120, 40],
    [80, 24],
  ]);
  p.io = null;
  p.io = io;
  assert.equal(sizes.length, 2, 'an applied size is not replayed');
});

/** A bundle dir with a `log` fifo and, like containerd, a reader on it (closed by the caller). */
function bundleWithReader(root: string, name: string): { bundle: string; read: () => string; close: () => void } {
  const bundle = path.join(root, name);
  fs.mkdirSync(bundle);
  execFileSync('mkfifo', [path.join(bundle, 'log')]);
  const fd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const buf = Buffer.alloc(65536);
  return {
    bundle,
    read: () => {
      try {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        return buf.subarray(0, n).toString();
      } catch {
        return '';
      }
    },
    close: () => fs.closeSync(fd),
  };
}

test('log sink: once the first bundle is deleted (its reader gone), lines go to a live bundle', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-log-'));
  try {
    const a = bundleWithReader(root, 'a');
    const b = bundleWithReader(root, 'b');
    let live = [a.bundle, b.bundle];
    const sink = new BundleLogSink(a.bundle, () => live);
    sink.write('one\n');
    assert.equal(a.read(), 'one\n');
    // containerd deletes task a: closes its reader, removes the bundle; the shim serves only b.
    a.close();
    fs.rmSync(a.bundle, { recursive: true });
    live = [b.bundle];
    sink.write('two\n');
    assert.equal(b.read(), 'two\n', 'the line that hit EPIPE is written to the live bundle');
    assert.equal(sink.current, b.bundle);
    sink.write('three\n');
    assert.equal(b.read(), 'three\n');
    b.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('log sink: debug lines wait for the next line or the delay, in order, none lost', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-log-'));
  try {
    const a = bundleWithReader(root, 'a');
    const sink = new BundleLogSink(a.bundle, () => [a.bundle]);
    const log = createLogger(sink, 'debug');
    log.debug('first');
    log.debug('second');
    assert.equal(a.read(), '', 'debug lines wait');
    log.info('third');
    const got = a.read();
    assert.deepEqual(
      got
        .split('\n')
        .filter(Boolean)
        .map((l) => /msg="(\w+)"/.exec(l)?.[1]),
      ['first', 'second', 'third'],
      'one write, in order'
    );
    log.debug('later');
    await new Promise((r) => setTimeout(r, DEFERRED_LINE_DELAY_MS + 50));
    assert.match(a.read(), /msg="later"/, 'written after the delay without another line');
    // More debug lines than one write takes (PIPE_BUF): none is lost, the order is kept.
    for (let i = 0; i < 100; i++) log.debug('many', { i, pad: 'x'.repeat(100) });
    sink.flush();
    const lines = a.read().split('\n').filter(Boolean);
    assert.equal(lines.length, 100);
    assert.deepEqual(
      lines.map((l) => Number(/ i=(\d+)/.exec(l)?.[1])),
      Array.from({ length: 100 }, (_, i) => i)
    );
    a.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('log sink: a pending debug line does not keep the event loop alive', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-log-'));
  try {
    const a = bundleWithReader(root, 'a');
    const sink = new BundleLogSink(a.bundle, () => [a.bundle]);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    createLogger(sink, 'debug').debug('pending');
    assert.equal(timers(), before, 'the delay timer is unref()ed');
    sink.flush();
    assert.match(a.read(), /msg="pending"/);
    a.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

/**
 * A child process logs debug lines to the bundle's fifo and ends the way `how` says; returns what
 * reached the fifo (msg values in order) and the child's exit status.
 */
function endWithPendingLines(how: string): { msgs: string[]; status: number | null; stderr: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-log-'));
  try {
    const a = bundleWithReader(root, 'a');
    const script = `
      const { BundleLogSink, createLogger } = require(${JSON.stringify(path.join(repo, 'dist/src/sys/logger.js'))});
      const { execve } = require(${JSON.stringify(path.join(repo, 'dist/src/upgrade/exec.js'))});
      const log = createLogger(new BundleLogSink(${JSON.stringify(a.bundle)}, () => []), 'debug');
      log.debug('one');
      log.debug('two');
      switch (${JSON.stringify(how)}) {
        case 'exit': process.exit(0);
        case 'end': break; // nothing else keeps the loop alive
        case 'uncaught': throw new Error('boom');
        case 'exit-listener': process.on('exit', () => log.debug('three')); process.exit(0);
        case 'execve': execve('/bin/true', ['/bin/true'], process.env);
      }`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    const msgs = a
      .read()
      .split('\n')
      .filter(Boolean)
      .map((l) => /msg="(\w+)"/.exec(l)?.[1] ?? l);
    a.close();
    return { msgs, status: r.status, stderr: r.stderr };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

test('log sink: pending debug lines are written when the process exits, however it ends', () => {
  for (const how of ['exit', 'end']) {
    const r = endWithPendingLines(how);
    assert.equal(r.status, 0, `${how}: ${r.stderr}`);
    assert.deepEqual(r.msgs, ['one', 'two'], how);
  }
  const uncaught = endWithPendingLines('uncaught');
  assert.equal(uncaught.status, 1, uncaught.stderr);
  assert.match(uncaught.stderr, /boom/);
  assert.deepEqual(uncaught.msgs, ['one', 'two'], 'uncaught exception');
  // A debug line made by an 'exit' listener that runs after the flush is not left waiting.
  const late = endWithPendingLines('exit-listener');
  assert.equal(late.status, 0, late.stderr);
  assert.deepEqual(late.msgs, ['one', 'two', 'three'], "a line made in an 'exit' listener");
});

test('log sink: pending debug lines are written before the execve of an in-place upgrade', () => {
  const r = endWithPendingLines('execve');
  assert.equal(r.status, 0, `the child became /bin/true: ${r.stderr}`);
  assert.deepEqual(r.msgs, ['one', 'two']);
});

test('log sink: no live reader anywhere drops the line, and does not retry on every line', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-log-'));
  try {
    const a = bundleWithReader(root, 'a');
    let lookups = 0;
    let now = 0;
    const sink = new BundleLogSink(
      a.bundle,
      () => {
        lookups++;
        return [a.bundle];
      },
      () => now
    );
    a.close(); // containerd is restarting: no reader
    sink.write('lost\n');
    sink.write('lost too\n');
    assert.equal(lookups, 1);
    now += 5000;
    sink.write('later\n');
    assert.equal(lookups, 2);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('process argv: a node process rewrites its /proc cmdline as NUL-separated Go-style arguments; as root it ends there, also after a shorter title', () => {
  const script = `
    const fs = require('fs');
    const { setShimArgv, setProcessTitle } = require(${JSON.stringify(path.join(repo, 'dist/src/shim/proc-title.js'))});
    setProcessTitle('containerd-shim-tsshim-v2 spare');
    const spare = fs.readFileSync('/proc/self/cmdline');
    setShimArgv({ namespace: 'ns1', id: 'c-1', address: '/run/containerd/containerd.sock' });
    process.stdout.write(Buffer.concat([fs.readFileSync('/proc/self/cmdline'), Buffer.from('|'), spare]));`;
  const r = spawnSync(process.execPath, [
    '-e',
    script,
    '--',
    '-namespace',
    'ns1',
    '-id',
    'c-1',
    '-address',
    '/run/containerd/containerd.sock',
  ]);
  assert.equal(r.status, 0, r.stderr.toString());
  const [raw, spare] = r.stdout.toString().split('|');
  const daemonArgs =
    'containerd-shim-tsshim-v2\0-namespace\0ns1\0-id\0c-1\0-address\0/run/containerd/containerd.sock\0';
  assert.ok(raw.startsWith(daemonArgs), JSON.stringify(raw));
  // No run of NULs after a title of one argument for the sh to read a byte at a time; with
  // CAP_SYS_RESOURCE (bit 24), none after the arguments either, also after a shorter title.
  assert.equal(spare, 'containerd-shim-tsshim-v2 spare\0');
  const capEff = BigInt('0x' + /^CapEff:\s*([0-9a-f]+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
  if (capEff & (1n << 24n)) assert.equal(raw, daemonArgs);
  assert.deepEqual(splitCmdline(raw), [
    'containerd-shim-tsshim-v2',
    '-namespace',
    'ns1',
    '-id',
    'c-1',
    '-address',
    '/run/containerd/containerd.sock',
  ]);
});

test('containerd-shim-tsshim-v2 -h / -help: usage on stdout, exit 0; an unknown flag: exit 2', () => {
  const main = path.join(repo, 'dist/src/daemon/main.js');
  for (const flag of ['-h', '--help', '-help']) {
    const r = spawnSync(process.execPath, [main, flag], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${flag}: ${r.stderr}`);
    assert.match(r.stdout, /^Usage: containerd-shim-tsshim-v2 /);
  }
  const bad = spawnSync(process.execPath, [main, '-bogus'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /flag provided but not defined: -bogus\nUsage:/);
});

test('every runtime dependency in package.json is imported by the shim or the CLI', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8'));
  const sources: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'gen') walk(p);
      } else if (p.endsWith('.ts')) sources.push(fs.readFileSync(p, 'utf8'));
    }
  };
  walk(path.join(repo, 'src'));
  const all = sources.join('\n');
  for (const dep of Object.keys(pkg.dependencies)) {
    assert.ok(all.includes(`'${dep}'`) || all.includes(`'${dep}/`), `${dep} is never imported by src/`);
  }
});
