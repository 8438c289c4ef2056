// The POSIX sh entry (bin/containerd-shim-tsshim-v2): its group computation must agree with
// src/shim/address.ts groupKey, or the fast path would hand a container to the wrong shim.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  groupKey,
  groupLookupLine,
  readAnnotations,
  shimGroupFile,
  shimPidFile,
  socketPath,
} from '../../src/shim/address';
import { isValidIdentifier } from '../../src/sys/identifiers';
import { answerFormat, sparePool } from '../../src/shim/spare';
import { DAEMON_NODE_FLAGS, nodeChildEnv, restoreExtraCaCerts } from '../../src/shim/node-flags';
import { buildSnapshot } from '../../src/daemon/snapshot-build';
import { until } from '../support/wait';

const wrapper = path.resolve(__dirname, '../../../bin/containerd-shim-tsshim-v2');

function shFunction(name: string): string {
  const text = fs.readFileSync(wrapper, 'utf8');
  const m = new RegExp(`^${name}\\(\\) \\{[\\s\\S]*?^\\}`, 'm').exec(text);
  assert.ok(m, `${name} in the wrapper`);
  return m[0];
}

function shGroupOf(configJson: string | null, id: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-sh-'));
  try {
    if (configJson !== null) fs.writeFileSync(path.join(dir, 'config.json'), configJson);
    const r = spawnSync(
      'sh',
      [
        '-c',
        `${shFunction('top_annotations')}\n${shFunction('group_of')}\ngroup_of "$1"; printf '%s' "$group"`,
        'sh',
        id,
      ],
      { cwd: dir, encoding: 'utf8' }
    );
    assert.equal(r.stderr, '', 'nothing on stderr: containerd reads it as the start output');
    assert.equal(r.status, 0);
    return r.stdout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('sh wrapper: group_of agrees with groupKey on the JSON containerd writes', () => {
  const cases: Record<string, string>[] = [
    { 'io.containerd.tsshim.v2.group': 'podA', 'io.kubernetes.cri.sandbox-id': 'sb1' },
    { 'io.kubernetes.cri.sandbox-id': 'sb1' },
    { 'io.containerd.tsshim.v2.group': '', 'io.kubernetes.cri.sandbox-id': 'sb1' },
    { 'io.containerd.runc.v2.group': 'rg', 'io.kubernetes.cri.sandbox-id': 'sb1' },
    { 'io.containerd.tsshim.v2.group': 'tg', 'io.containerd.runc.v2.group': 'rg' },
    { other: 'x' },
    {},
  ];
  for (const annotations of cases) {
    const json = JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, annotations, linux: {} });
    assert.equal(shGroupOf(json, 'ctr1'), groupKey('ctr1', annotations), json);
  }
  // Strings before the annotations with escaped quotes, backslash runs and braces in them.
  const tricky = JSON.stringify({
    process: { env: ['A=x"}{y', 'B=\\', 'C=\\"{', 'D=\\\\'], args: ['{"annotations"'] },
    annotations: { 'io.kubernetes.cri.sandbox-id': 'sb2' },
  });
  assert.equal(shGroupOf(tricky, 'ctr1'), 'sb2', tricky);
});

test("sh wrapper: group_of reads the spec containerd's cri plugin writes for a pod container (captured)", () => {
  const json = fs.readFileSync(path.resolve(__dirname, '../../../test/fixtures/cri/config-container.json'), 'utf8');
  const expected = groupKey('c0', readAnnotationsOf(json));
  assert.match(expected, /^[0-9a-f]{64}$/, 'the sandbox id');
  assert.equal(shGroupOf(json, 'c0'), expected);
});

test('sh wrapper: group_of leaves escaped values, paths, other layouts and a missing file to Node', () => {
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.containerd.tsshim.v2.group': 'a"b' } }), 'c'), '');
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.containerd.tsshim.v2.group': 'a/../b' } }), 'c'), '');
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'x' } }, null, 2), 'c'), '');
  const oneLine = JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'x' } });
  assert.equal(shGroupOf(`${oneLine}\n${oneLine}`, 'c'), '', 'two lines: not as containerd writes it');
  assert.equal(shGroupOf(`${oneLine}\n`, 'c'), 'x', 'a trailing newline is no second line');
  assert.equal(shGroupOf(null, 'c'), '');
});

test('sh wrapper: only config.json annotations decide the group, never sysctl, env or other strings', () => {
  const hostile = [
    { linux: { sysctl: { 'io.containerd.tsshim.v2.group': 'evil' } } },
    { process: { env: ['"io.containerd.tsshim.v2.group":"evil"', 'io.kubernetes.cri.sandbox-id=evil'] } },
    { process: { user: { username: 'io.containerd.runc.v2.group' } }, hostname: 'evil' },
    { linux: { sysctl: { 'io.kubernetes.cri.sandbox-id': 'evil' } }, annotations: { a: 'b' } },
    { linux: { sysctl: { '"annotations":{"io.containerd.tsshim.v2.group': 'evil' } } },
    // An object named annotations below the top level (a client's spec is written as it came).
    { linux: { extra: { annotations: { 'io.containerd.tsshim.v2.group': 'evil' } } } },
    { process: { args: ['sh'] }, x: [{ annotations: { 'io.kubernetes.cri.sandbox-id': 'evil' } }] },
  ];
  for (const spec of hostile) {
    const json = JSON.stringify({ ociVersion: '1.0.2', ...spec });
    const got = shGroupOf(json, 'ctr1');
    assert.ok(got === '' || got === 'ctr1', `${json}: ${got}`);
    if (got) assert.equal(got, groupKey('ctr1', readAnnotationsOf(json)));
  }
});

function readAnnotationsOf(json: string): Record<string, string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-ann-'));
  try {
    fs.writeFileSync(path.join(dir, 'config.json'), json);
    return readAnnotations(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// One truth: the sh and src/ compute the same group, socket, pid file and spare pool, or the sh
// declines (empty group) and Node decides.

interface ShAnswer {
  group: string;
  socket: string;
  pidfile: string;
  pool: string;
}

function shAnswers(cases: { json: string | null; id: string; ns: string; address: string }[]): ShAnswer[] {
  const text = fs.readFileSync(wrapper, 'utf8');
  const settings = text
    .split('\n')
    .filter((l) => /^(state|socket_dir)=/.test(l))
    .join('\n');
  const fns = ['clean_path', 'valid_identifier', 'top_annotations', 'group_of', 'shim_paths', 'pool_of']
    .map(shFunction)
    .join('\n');
  // The same decisions fast_start makes before it uses a group: Node decides otherwise.
  const script =
    `${settings}\n${fns}\n` +
    String.raw`
    group='' socket='' pidfile='' pool=''
    ns=$1 id=$2 address=$3
    pool_of "$address"
    if clean_path "$address" && valid_identifier "$ns" && valid_identifier "$id"; then
      group_of "$id"
      [ -n "$group" ] && shim_paths "$address" "$ns" "$group"
      [ ${'$'}{#socket} -le 106 ] || group=''
    fi
    printf '%s\n' "$group" "$socket" "$pidfile" "$pool"`;
  return cases.map((c) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-sh-'));
    try {
      if (c.json !== null) fs.writeFileSync(path.join(dir, 'config.json'), c.json);
      const r = spawnSync('sh', ['-c', script, 'sh', c.ns, c.id, c.address], { cwd: dir, encoding: 'utf8' });
      assert.equal(r.stderr, '', 'nothing on stderr');
      const [group, socket, pidfile, pool] = r.stdout.split('\n');
      return { group, socket, pidfile, pool };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('sh wrapper: group, socket hash, pid file and spare pool agree with src/ over a corpus, or the sh declines', () => {
  const spec = (annotations: unknown, extra: object = {}) =>
    JSON.stringify({ ociVersion: '1.1.0', process: { args: ['sh'], env: ['A=b\\c"d'] }, ...extra, annotations });
  const configs: (string | null)[] = [
    null,
    '{}',
    spec({}),
    spec(null),
    spec(undefined),
    spec({ 'io.containerd.tsshim.v2.group': 'g1' }),
    spec({ 'io.containerd.runc.v2.group': 'r1' }),
    spec({ 'io.kubernetes.cri.sandbox-id': 'f'.repeat(64) }),
    spec({
      'io.kubernetes.cri.sandbox-id': 'sb',
      'io.containerd.runc.v2.group': 'rg',
      'io.containerd.tsshim.v2.group': 'tg',
    }),
    spec({
      'io.kubernetes.cri.sandbox-id': 'sb',
      'io.containerd.runc.v2.group': '',
      'io.containerd.tsshim.v2.group': '',
    }),
    spec({ 'io.containerd.tsshim.v2.group': 'pod:1@x+y=z,w~%.-_' }),
    spec({ other: 'x}y{"z', 'io.containerd.tsshim.v2.group': 'after-brace' }),
    spec({ other: 'a\\', 'io.containerd.tsshim.v2.group': 'g' }),
    spec({ 'io.containerd.tsshim.v2.group': 'caf\u00e9' }),
    spec({ 'io.containerd.tsshim.v2.group': '<x>' }),
    spec({ 'io.containerd.tsshim.v2.group': '..' }),
    spec({ 'io.containerd.tsshim.v2.group': '.' }),
    spec({ 'io.containerd.tsshim.v2.group': 'a/b' }),
    spec({ 'io.containerd.tsshim.v2.group': 'a b' }),
    spec({ 'io.containerd.tsshim.v2.group': 'x'.repeat(300) }),
    '{"annotations":{"io.containerd.tsshim.v2.group":"first","io.containerd.tsshim.v2.group":"last"}}',
    '{"annotations":{"io.containerd.tsshim.v2.group":"\\u0067"}}',
    '{"annotations": {"io.containerd.tsshim.v2.group":"spaced"}}',
    '{"annotations":{"io.containerd.tsshim.v2.group":5}}',
    '{"hostname":"annotations","annotations":{"io.containerd.tsshim.v2.group":"g"}}',
    '{"linux":{"sysctl":{"io.containerd.tsshim.v2.group":"evil"}}}',
    spec({ a: 'b' }, { linux: { sysctl: { 'io.kubernetes.cri.sandbox-id': 'evil' } } }),
    spec({ 'io.containerd.tsshim.v2.group': 'g' }, null as unknown as object),
  ];
  const ids = ['c1', 'a'.repeat(76), 'x.y-z_w', 'a'.repeat(77), 'bad..id', '-x'];
  const namespaces = ['default', 'k8s.io', 'a-b_c.d', 'bad/ns', ''];
  const addresses = [
    '/run/containerd/containerd.sock',
    '/tmp/a b/c.sock',
    '/x//y.sock',
    'relative.sock',
    '/run/./c.sock',
    '/run/c.sock/',
    `/${'d'.repeat(200)}/c.sock`,
    '/run/k\u00e9/c.sock',
    '',
  ];
  const cases: { json: string | null; id: string; ns: string; address: string }[] = [];
  for (const json of configs) cases.push({ json, id: 'c1', ns: 'default', address: addresses[0] });
  for (const id of ids) for (const ns of namespaces) cases.push({ json: configs[7], id, ns, address: addresses[0] });
  for (const address of addresses)
    for (const json of [configs[5], configs[2]]) cases.push({ json, id: 'c1', ns: 'k8s.io', address });
  const answers = shAnswers(cases);
  let decided = 0;
  cases.forEach((c, i) => {
    const sh = answers[i];
    const what = JSON.stringify(c).slice(0, 300);
    assert.equal(sh.pool, sparePool(c.address), `pool of ${what}`);
    if (sh.group === '') return; // declined: Node decides
    decided++;
    assert.ok(
      isValidIdentifier(c.ns) && isValidIdentifier(c.id),
      `sh decided for an id or namespace Node refuses: ${what}`
    );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-ts-'));
    let annotations: Record<string, string>;
    try {
      if (c.json !== null) fs.writeFileSync(path.join(dir, 'config.json'), c.json);
      annotations = readAnnotations(dir);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const group = groupKey(c.id, annotations);
    assert.equal(sh.group, group, `group of ${what}`);
    const socket = socketPath(c.address, c.ns, group);
    assert.equal(sh.socket, socket, `socket of ${what}`);
    assert.equal(sh.pidfile, shimPidFile(socket), `pid file of ${what}`);
  });
  assert.ok(decided >= 20, `the sh answers ordinary cases itself (${decided} of ${cases.length})`);
});

function readCmdline(pid: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

test('sh wrapper: is_shim accepts a process titled as a tsshim daemon, not a recycled pid', () => {
  const fn = shFunction('is_shim');
  const check = (pid: string) => spawnSync('sh', ['-c', `${fn}\nis_shim "$1"`, 'sh', pid]).status;
  const fake = spawnSync(
    'bash',
    ['-c', 'exec -a containerd-shim-tsshim-v2 sleep 5 >/dev/null 2>&1 </dev/null & echo $!'],
    { encoding: 'utf8' }
  );
  const pid = fake.stdout.trim();
  try {
    // The background child may not have exec'd yet when bash returns.
    for (let i = 0; i < 100 && !readCmdline(pid).startsWith('containerd-shim-tsshim-v2'); i++)
      spawnSync('sleep', ['0.02']);
    assert.equal(check(pid), 0);
    assert.equal(check(String(process.pid)), 1, 'node itself is not a shim');
    assert.equal(check('999999999'), 1);
    assert.equal(check('12abc'), 1);
    assert.equal(check(''), 1);
  } finally {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

// ---------------------------------------------------------------------------------------------
// The whole wrapper, installed in a scratch tree whose "Node" only says that it was asked.

interface Install {
  root: string;
  bin: string;
  run(
    args: string[],
    opts: { cwd: string; env: Record<string, string>; input?: string }
  ): { status: number | null; out: string };
  /**
   * run, without blocking this process (a fake spare in a child of ours must answer meanwhile);
   * `shell` runs the wrapper with that sh instead of its #! line's.
   */
  runAsync(
    args: string[],
    opts: { cwd: string; env: Record<string, string>; input?: string; shell?: string }
  ): Promise<{ status: number | null; out: string }>;
}

function fakeInstall(): Install {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-install-'));
  fs.mkdirSync(path.join(root, 'bin'));
  fs.mkdirSync(path.join(root, 'dist/src/daemon'), { recursive: true });
  const bin = path.join(root, 'bin/containerd-shim-tsshim-v2');
  fs.copyFileSync(wrapper, bin);
  fs.chmodSync(bin, 0o755);
  // Node decides: as `start` on stdin and stdout, or as the daemon of a cold start that answers the
  // request the sh left in a directory (spare.ts runClaim: stdin from the directory, or from the
  // waiting start's fd 3 as spare.ts readRequest takes it). Either way it records how it was run.
  fs.writeFileSync(
    path.join(root, 'dist/src/daemon/boot.js'),
    `
    const fs = require('fs');
    fs.writeFileSync(${JSON.stringify(path.join(root, 'node-argv'))}, JSON.stringify([...process.execArgv, ...process.argv.slice(2)]));
    const ca = (k) => (k in process.env ? process.env[k] : null);
    fs.writeFileSync(${JSON.stringify(path.join(root, 'node-env'))}, JSON.stringify({ NODE_EXTRA_CA_CERTS: ca('NODE_EXTRA_CA_CERTS'), TSSHIM_SAVED_NODE_EXTRA_CA_CERTS: ca('TSSHIM_SAVED_NODE_EXTRA_CA_CERTS') }));
    fs.writeFileSync(${JSON.stringify(path.join(root, 'node-paths'))}, JSON.stringify({ LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH ?? null, PATH: process.env.PATH }));
    const i = process.argv.indexOf('claim');
    const c = process.argv.indexOf('cold');
    if (c >= 0) {
      // A direct cold start (spare.ts runCold): stdin on fd 3, the answer lines on fd 4.
      // FAKE_COLD makes it die at a step, or linger (as a daemon does) once it answered.
      const mode = process.env.FAKE_COLD || '';
      const fmt = (b) => [...b].map((x) => x > 0x20 && x < 0x7f && x !== 0x5c && x !== 0x25
        ? String.fromCharCode(x) : '\\\\' + x.toString(8).padStart(3, '0')).join('');
      fs.writeFileSync(${JSON.stringify(path.join(root, 'stdin-from'))}, 'fd3');
      const stat = fs.readFileSync('/proc/self/stat', 'utf8');
      fs.writeFileSync(${JSON.stringify(path.join(root, 'cold-session'))}, JSON.stringify({ pid: process.pid, sid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]) }));
      if (mode === 'die-unread') process.exit(1);
      fs.writeSync(4, 'r ' + process.pid + '\\n');
      if (mode === 'die-reading') process.exit(1);
      const data = fs.readFileSync(3);
      fs.writeSync(4, 's ' + fmt(data) + '\\n');
      if (mode === 'die-read') process.exit(1);
      fs.writeSync(4, '0 fmt ' + fmt(Buffer.concat([Buffer.from('NODE-DECIDES stdin='), data])) + '\\n');
      fs.closeSync(4);
      if (mode === 'linger') setTimeout(() => {}, 60_000); // the test ends it
    } else if (i < 0) process.stdout.write('NODE-DECIDES stdin=' + fs.readFileSync(0, 'utf8'));
    else {
      const dir = process.argv[i + 1];
      const startPid = fs.readFileSync(dir + '/startpid', 'utf8').trim();
      const stdin = fs.existsSync(dir + '/stdin') ? dir + '/stdin' : '/proc/' + startPid + '/fd/3';
      fs.writeFileSync(${JSON.stringify(path.join(root, 'stdin-from'))}, stdin.startsWith('/proc/') ? 'fd3' : 'dir');
      fs.writeFileSync(dir + '/out', 'NODE-DECIDES stdin=' + fs.readFileSync(stdin, 'utf8'));
      fs.writeFileSync(dir + '/status', '0');
      fs.closeSync(fs.openSync(dir + '/resp', 'w'));
    }
  `
  );
  return {
    root,
    bin,
    run(args, opts) {
      const env = { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`, ...opts.env };
      // containerd reads stdout and stderr combined: so do we.
      const r = spawnSync(bin, args, {
        cwd: opts.cwd,
        env,
        input: opts.input ?? '',
        encoding: 'utf8',
        timeout: 30_000,
      });
      return { status: r.status, out: r.stdout + r.stderr };
    },
    runAsync(args, opts) {
      const env = { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`, ...opts.env };
      // Pipes, as containerd (Go's os/exec) gives them, not Node's socket pairs: stdout and stderr
      // one pipe, read until its last writer is gone, and the start's exit status.
      const p = spawn(
        '/bin/sh',
        ['-c', 'printf %s "$IN" | { ${SH:+"$SH"} "$@" 2>&1; echo "$?" > "$STATUS"; } | cat', 'sh', bin, ...args],
        {
          cwd: opts.cwd,
          env: { ...env, IN: opts.input ?? '', STATUS: path.join(root, 'status'), SH: opts.shell ?? '' },
          timeout: 30_000,
        }
      );
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      return new Promise((resolve) => {
        p.once('close', () =>
          resolve({ status: Number(fs.readFileSync(path.join(root, 'status'), 'utf8').trim()), out })
        );
      });
    },
  };
}

const ADDRESS = '/run/tsshim-test-nonexistent/containerd.sock';
const POOL_HASH = createHash('sha256').update(ADDRESS).digest('hex').slice(0, 16);
/** How the fake Node of an install was last run: node flags, then its arguments. */
const nodeArgv = (inst: Install): string[] => JSON.parse(fs.readFileSync(path.join(inst.root, 'node-argv'), 'utf8'));
const START_ARGS = ['-namespace', 'default', '-id', 'c1', '-address', ADDRESS, 'start'];

/** A process titled like a waiting spare (the sh checks a spare's /proc cmdline). */
function sleeper(): number {
  const p = spawn('bash', ['-c', 'exec -a "containerd-shim-tsshim-v2 spare" sleep 60'], {
    stdio: 'ignore',
    detached: true,
  });
  p.unref();
  for (let i = 0; i < 200 && !readCmdline(String(p.pid)).startsWith('containerd-shim-tsshim-v2'); i++)
    spawnSync('sleep', ['0.02']);
  return p.pid!;
}

/** A directory that looks like a waiting spare to the sh, answering `address` without any process. */
function plantSpare(pool: string, pid: number, address: string): string {
  const dir = path.join(pool, String(pid));
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['req', 'resp']) fs.writeFileSync(path.join(dir, f), '');
  fs.writeFileSync(path.join(dir, 'status'), '0');
  fs.writeFileSync(path.join(dir, 'out'), address);
  return dir;
}

/** A state dir of `inst` that is ours alone, its pool of ADDRESS holding a spare of `pid` planted there. */
function stateWithPlantedSpare(inst: Install, pid: number): { state: string; pool: string; spare: string } {
  const state = path.join(inst.root, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  const pool = sparePool(ADDRESS, state);
  return { state, pool, spare: plantSpare(pool, pid, 'unix:///wrong.sock') };
}

/** A start's environment for `inst`: a state dir of its own, no spares (every start is cold). */
function coldStartEnv(inst: Install): Record<string, string> {
  const state = path.join(inst.root, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  return { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's'), TSSHIM_SPARES: '0' };
}

function bundleDir(root: string): string {
  const bundle = path.join(root, 'bundle');
  fs.mkdirSync(bundle, { recursive: true });
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.1.0', annotations: {} }));
  return bundle;
}

const kill = (pid: number) => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
};

test('sh wrapper: a state dir others can write (1777) is not trusted: no planted spare answers, no symlink is written through', () => {
  const inst = fakeInstall();
  const pid = sleeper();
  try {
    const state = path.join(inst.root, 'state');
    fs.mkdirSync(state);
    fs.chmodSync(state, 0o1777);
    const pool = path.join(state, 'spares', createHash('sha256').update(ADDRESS).digest('hex').slice(0, 16));
    const spare = plantSpare(pool, pid, 'unix:///attacker.sock');
    const victim = path.join(inst.root, 'victim');
    fs.writeFileSync(victim, 'precious');
    fs.symlinkSync(victim, path.join(spare, 'argv'));
    fs.chownSync(path.join(state, 'spares'), 65534, 65534); // as another user would leave it
    const r = inst.run(START_ARGS, {
      cwd: bundleDir(inst.root),
      env: { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's') },
      input: 'OPTS',
    });
    assert.equal(r.out, 'NODE-DECIDES stdin=OPTS', 'Node decides, with the request intact');
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious', 'nothing written through the planted symlink');
    assert.ok(fs.existsSync(spare), 'the planted spare was not touched');
  } finally {
    kill(pid);
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: hand-off files are created with O_EXCL: a symlink in a spare dir makes Node decide', () => {
  const inst = fakeInstall();
  const pid = sleeper();
  try {
    const { state, pool, spare } = stateWithPlantedSpare(inst, pid);
    const victim = path.join(inst.root, 'victim');
    fs.writeFileSync(victim, 'precious');
    fs.symlinkSync(victim, path.join(spare, 'env'));
    const r = inst.run(START_ARGS, {
      cwd: bundleDir(inst.root),
      env: { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's') },
      input: 'OPTS',
    });
    assert.equal(r.out, 'NODE-DECIDES stdin=OPTS');
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious');
    assert.deepEqual(fs.readdirSync(pool), [], 'the claimed spare dir is gone');
  } finally {
    kill(pid);
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: a spare that another start (or its own retiring) claimed is passed over and left as it is; a dead spare is taken before it is removed', async () => {
  const inst = fakeInstall();
  const pid = sleeper();
  try {
    const { state, spare } = stateWithPlantedSpare(inst, pid);
    fs.writeFileSync(path.join(spare, 'claimed'), 'another start');
    const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's') };
    const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS' });
    assert.deepEqual(r, { status: 0, out: 'NODE-DECIDES stdin=OPTS' }, 'a cold start, with the request intact');
    assert.equal(fs.readFileSync(path.join(spare, 'claimed'), 'utf8'), 'another start', 'the claim is untouched');
    assert.deepEqual(fs.readdirSync(spare).sort(), ['claimed', 'out', 'req', 'resp', 'status'], 'nothing handed over');
    assert.equal(fs.readFileSync(path.join(spare, 'req'), 'utf8'), '', 'not rung');
    // Its process gone, the claimed directory still belongs to the start that claimed it...
    kill(pid);
    await until(() => !readCmdline(String(pid)).startsWith('containerd-shim-tsshim-v2'), 'the spare process gone');
    await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS' });
    assert.ok(fs.existsSync(path.join(spare, 'claimed')), "a claimed dead spare's directory stays");
    // ... while an unclaimed dead one is claimed, then removed.
    fs.rmSync(path.join(spare, 'claimed'));
    await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS' });
    assert.ok(!fs.existsSync(spare), "a dead spare's directory goes");
  } finally {
    kill(pid);
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: a full disk during the hand-off never puts shell error text in the answer', (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root to mount a tmpfs');
  const inst = fakeInstall();
  const state = path.join(inst.root, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tsshim-full', state]);
  if (mounted.status !== 0) {
    fs.rmSync(inst.root, { recursive: true, force: true });
    return t.skip(`mount: ${mounted.stderr}`);
  }
  const pids: number[] = [];
  try {
    const pool = path.join(state, 'spares', createHash('sha256').update(ADDRESS).digest('hex').slice(0, 16));
    const bundle = bundleDir(inst.root);
    const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's') };
    for (const input of ['', 'OPTIONS-THAT-DO-NOT-FIT']) {
      const pid = sleeper();
      pids.push(pid);
      plantSpare(pool, pid, 'unix:///wrong.sock');
      spawnSync('sh', ['-c', 'cat /dev/zero > "$1/fill" 2>/dev/null', 'sh', state]);
      const r = inst.run(START_ARGS, { cwd: bundle, env, input });
      fs.rmSync(path.join(state, 'fill'), { force: true });
      assert.doesNotMatch(r.out, /sh: |cannot create|printf: |cat: |I\/O error|No space|wrong\.sock/, r.out);
      if (r.status === 0) assert.equal(r.out, `NODE-DECIDES stdin=${input}`, 'falls back to Node with the request');
      else assert.match(r.out, /^containerd-shim-tsshim-v2: start: could not hand the request to a spare/);
      if (input === '') assert.equal(r.status, 0, 'an empty request still reaches Node');
    }
  } finally {
    for (const pid of pids) kill(pid);
    spawnSync('umount', [state]);
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

/** A process the sh's is_shim takes for a live tsshim daemon: its cmdline starts with the shim's name. */
function fakeShimProcess(): ChildProcess {
  const shim = spawn('bash', ['-c', 'exec -a containerd-shim-tsshim-v2 sleep 60'], { stdio: 'ignore', detached: true });
  for (let i = 0; i < 200 && !readCmdline(String(shim.pid)).startsWith('containerd-shim-tsshim-v2'); i++)
    spawnSync('sleep', ['0.02']);
  return shim;
}

test('sh wrapper: where the sh declines (an annotation it cannot read exactly), Node decides, even beside a live shim', async () => {
  const inst = fakeInstall();
  const shim = fakeShimProcess();
  const server = net.createServer();
  try {
    const state = path.join(inst.root, 'state');
    const sockets = path.join(inst.root, 's');
    fs.mkdirSync(state, { mode: 0o700 });
    fs.mkdirSync(sockets, { mode: 0o700 });
    // A live shim serves the container id's own group: the answer if the annotation were ignored.
    const hash = path.basename(socketPath(ADDRESS, 'default', 'c1'));
    await new Promise<void>((r) => server.listen(path.join(sockets, hash), r));
    fs.writeFileSync(path.join(state, `${hash}.pid`), String(shim.pid));
    const bundle = bundleDir(inst.root);
    const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: sockets, TSSHIM_SPARES: '0' };
    assert.equal(
      inst.run(START_ARGS, { cwd: bundle, env }).out,
      `unix://${path.join(sockets, hash)}`,
      'the sh answers a plain config itself'
    );
    for (const group of ['caf\u00e9', 'a"b', '..']) {
      fs.writeFileSync(
        path.join(bundle, 'config.json'),
        JSON.stringify({ ociVersion: '1.1.0', annotations: { 'io.containerd.tsshim.v2.group': group } })
      );
      assert.equal(
        inst.run(START_ARGS, { cwd: bundle, env }).out,
        'NODE-DECIDES stdin=',
        `group ${JSON.stringify(group)}`
      );
    }
  } finally {
    kill(shim.pid!);
    server.close();
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

/**
 * A directory put first on the wrapper's PATH whose find, sha256sum and mv log that they ran (then
 * run the real ones): the programs a start forks, which the fast path keeps to a minimum. `locales`:
 * the LC_ALL each ran with (`-` unset), in the same order.
 */
function programLog(root: string): { path: string; ran: () => string[]; locales: () => string[]; clear: () => void } {
  const dir = path.join(root, 'tools');
  const log = path.join(root, 'programs.log');
  fs.mkdirSync(dir);
  for (const prog of ['find', 'sha256sum', 'mv']) {
    const real = spawnSync('sh', ['-c', `command -v ${prog}`], { encoding: 'utf8' }).stdout.trim();
    const script = `#!/bin/sh\necho "${prog} \${LC_ALL:--}" >> ${log}\nexec ${real} "$@"\n`;
    fs.writeFileSync(path.join(dir, prog), script, { mode: 0o755 });
  }
  const lines = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean) : []);
  return {
    path: `${dir}:${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`,
    ran: () => lines().map((l) => l.split(' ')[0]),
    locales: () => lines().map((l) => l.split(' ')[1]),
    clear: () => fs.rmSync(log, { force: true }),
  };
}

test("sh wrapper: a pod's container whose group shim runs is answered by the sh: no Node, no spare claimed, no cold start; with the daemon's group lookup, no program at all", async () => {
  const inst = fakeInstall();
  const shim = fakeShimProcess();
  const spare = sleeper();
  const server = net.createServer();
  try {
    const state = path.join(inst.root, 'state');
    const sockets = path.join(inst.root, 's');
    fs.mkdirSync(state, { mode: 0o700 });
    fs.mkdirSync(sockets, { mode: 0o700 });
    // The spec containerd's cri plugin writes for a pod's container (captured): its group is the pod.
    const bundle = bundleDir(inst.root);
    const spec = fs.readFileSync(path.resolve(__dirname, '../../../test/fixtures/cri/config-container.json'), 'utf8');
    fs.writeFileSync(path.join(bundle, 'config.json'), spec);
    const ns = 'k8s.io';
    const group = groupKey('c0', readAnnotationsOf(spec));
    const socket = socketPath(ADDRESS, ns, group, sockets);
    await new Promise<void>((r) => server.listen(socket, r));
    fs.writeFileSync(shimPidFile(socket, state), String(shim.pid));
    // A waiting spare of this containerd: a start that took the spare path would claim it.
    const waiting = plantSpare(sparePool(ADDRESS, state), spare, 'unix:///the-spare.sock');
    const programs = programLog(inst.root);
    const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: sockets, PATH: programs.path, LANG: 'C.UTF-8' };
    const args = ['-namespace', ns, '-id', 'c0', '-address', ADDRESS, 'start'];
    const start = (what: string, expected: string[], addressBefore?: string) => {
      programs.clear();
      fs.rmSync(path.join(inst.root, 'node-argv'), { force: true });
      fs.rmSync(path.join(bundle, 'address'), { force: true });
      if (addressBefore !== undefined) fs.writeFileSync(path.join(bundle, 'address'), addressBefore);
      const r = inst.run(args, { cwd: bundle, env, input: 'OPTS' });
      assert.deepEqual(r, { status: 0, out: `unix://${socket}` }, `${what}: the group's shim`);
      assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), `unix://${socket}`, `${what}: address file`);
      assert.ok(!fs.existsSync(path.join(inst.root, 'node-argv')), `${what}: no Node ran (no start, no daemon)`);
      assert.ok(!fs.existsSync(path.join(waiting, 'claimed')), `${what}: the waiting spare was not claimed`);
      assert.deepEqual(programs.ran().sort(), expected.sort(), `${what}: the programs the start ran`);
      // A UTF-8 LANG would have them load a dozen locale files first (~0.7 ms of each).
      assert.deepEqual(
        programs.locales(),
        expected.map(() => 'C'),
        `${what}: each with LC_ALL=C`
      );
    };
    start('pid file only (no lookup)', ['find', 'sha256sum']);
    // What the daemon leaves (src/daemon/serve.ts): the sh needs no hashing and no find then.
    const lookup = shimGroupFile(ns, group, state);
    assert.ok(lookup, 'a CRI pod id makes a lookup name');
    fs.writeFileSync(lookup, groupLookupLine(socket, shim.pid!, ns, group, ADDRESS)!);
    start('with the lookup', []);
    // An address file there already (a start again in the same bundle) is replaced whole (rename).
    start('with the lookup, an address file there', ['mv'], 'unix:///a-much-longer-address-from-before.sock');
    assert.deepEqual(
      fs.readdirSync(bundle).filter((n) => n.includes('address')),
      ['address'],
      'no temporary file left'
    );
    // A lookup the sh must not believe: then the hashed pid file decides, as without one.
    const other = socketPath(ADDRESS, ns, 'other-pod', sockets);
    const wrong: [string, string][] = [
      ['renamed from another group', groupLookupLine(other, shim.pid!, ns, 'other-pod', ADDRESS)!],
      ['of another containerd', groupLookupLine(socket, shim.pid!, ns, group, ADDRESS + '2')!],
      ['of a pid that is no shim', groupLookupLine(socket, process.pid, ns, group, ADDRESS)!],
      ['not a socket name', `../x ${shim.pid} ${ns} ${group} ${ADDRESS}\n`],
    ];
    for (const [what, line] of wrong) {
      fs.writeFileSync(lookup, line);
      start(`a lookup ${what}`, ['find', 'sha256sum']);
    }
    fs.writeFileSync(lookup, groupLookupLine(socket, shim.pid!, ns, group, ADDRESS)!);
    if (process.geteuid?.() === 0) {
      fs.chownSync(lookup, 65534, 65534); // as another user able to write the state dir would leave it
      start('a lookup owned by another user', ['find', 'sha256sum']);
      fs.chownSync(lookup, 0, 0);
    }
    fs.rmSync(lookup);
    fs.symlinkSync(path.join(inst.root, 'elsewhere'), lookup);
    fs.writeFileSync(path.join(inst.root, 'elsewhere'), groupLookupLine(socket, shim.pid!, ns, group, ADDRESS)!);
    start('a symlinked lookup', ['find', 'sha256sum']);
  } finally {
    kill(shim.pid!);
    kill(spare);
    server.close();
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: with TSSHIM_SNAPSHOT=1 a cold start boots from the V8 snapshot made for this node and bundle; a stale one is skipped and made anew in the background; without it, never', async () => {
  const inst = fakeInstall();
  try {
    const daemonDir = path.join(inst.root, 'dist/src/daemon');
    // The bundle's main does what the fake boot.js does (records how Node ran, answers the claim).
    const fakeBoot = fs.readFileSync(path.join(daemonDir, 'boot.js'), 'utf8');
    fs.writeFileSync(
      path.join(daemonDir, 'bundle.js'),
      `globalThis.__tsshimSnapshotMain = () => {
        if (process.argv.includes('-v')) { process.stdout.write('Version: fake\\n'); return; }
        ${fakeBoot}
      };\n`
    );
    const blob = buildSnapshot(daemonDir);
    assert.ok(blob);
    const env = coldStartEnv(inst);
    const start = (snapshot = '1') => {
      fs.rmSync(path.join(inst.root, 'node-argv'), { force: true });
      const r = inst.run(START_ARGS, {
        cwd: bundleDir(inst.root),
        env: { ...env, TSSHIM_SNAPSHOT: snapshot },
        input: 'OPTS',
      });
      assert.deepEqual(r, { status: 0, out: 'NODE-DECIDES stdin=OPTS' });
      return nodeArgv(inst);
    };
    const argv = start();
    assert.deepEqual(
      argv.filter((a) => a.startsWith('--')),
      [...DAEMON_NODE_FLAGS, '--snapshot-blob'],
      'the daemon flags and the snapshot'
    );
    assert.equal(argv[argv.indexOf('--snapshot-blob') + 1], blob);
    assert.ok(argv.includes('cold'));
    assert.deepEqual(
      start('0').filter((a) => a.startsWith('--')),
      [...DAEMON_NODE_FLAGS],
      'not opted in: no snapshot (it costs memory)'
    );
    // A rebuild or an install writes a new bundle file: its old blob must not be used.
    const marker = path.join(inst.root, 'snapshot-build-ran');
    fs.writeFileSync(
      path.join(daemonDir, 'snapshot-build.js'),
      `require('fs').writeFileSync(${JSON.stringify(marker)}, process.argv.slice(1).join(' '));\n`
    );
    const bundle = path.join(daemonDir, 'bundle.js');
    fs.copyFileSync(bundle, bundle + '.new');
    fs.renameSync(bundle + '.new', bundle);
    assert.deepEqual(
      start().filter((a) => a.startsWith('--')),
      [...DAEMON_NODE_FLAGS],
      'a stale snapshot is not used'
    );
    await until(() => fs.existsSync(marker), 'a snapshot build started for the next cold start');
    assert.equal(fs.readFileSync(marker, 'utf8'), path.join(daemonDir, 'snapshot-build.js'));
  } finally {
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: with no spare, a cold start boots one Node process: the daemon, handed the request directly, in a session of its own', async () => {
  const inst = fakeInstall();
  try {
    const state = path.join(inst.root, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    const pool = path.join(state, 'spares', POOL_HASH);
    // No spare anywhere (or spares off) and no shim's pid file: nothing for the sh to look up. Node's
    // socket pair as stdin, or a pipe (as containerd gives it): either way the daemon's fd 3.
    for (const [spares, how, shell] of [
      ['1', 'sync', ''],
      ['0', 'sync', ''],
      ['0', 'async', ''],
      ['1', 'async', '/bin/bash'],
    ]) {
      const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's'), TSSHIM_SPARES: spares };
      const opts = { cwd: bundleDir(inst.root), env, input: 'OPTS \\ 100% \n\u00e9', shell };
      const r = how === 'sync' ? inst.run(START_ARGS, opts) : await inst.runAsync(START_ARGS, opts);
      assert.deepEqual(
        r,
        { status: 0, out: 'NODE-DECIDES stdin=OPTS \\ 100% \n\u00e9' },
        `spares=${spares} ${shell}: the answer, byte for byte, with the request intact`
      );
      assert.equal(fs.readFileSync(path.join(inst.root, 'stdin-from'), 'utf8'), 'fd3');
      const argv = nodeArgv(inst);
      const cold = argv.indexOf('cold');
      assert.ok(cold > 0, `run as a direct cold start, not as start: ${argv.join(' ')}`);
      assert.deepEqual(
        argv.slice(cold + 3),
        START_ARGS,
        "the start's own arguments after the containerd and start pids"
      );
      assert.deepEqual(
        argv.filter((a) => a.startsWith('--')),
        [...DAEMON_NODE_FLAGS],
        "with the daemon's node flags"
      );
      assert.ok(argv.includes('-title-space'), 'with room for the daemon title');
      const session = JSON.parse(fs.readFileSync(path.join(inst.root, 'cold-session'), 'utf8'));
      assert.equal(session.sid, session.pid, "the daemon leads a session of its own, not containerd's");
      assert.ok(!fs.existsSync(pool), 'no request directory, no pool made for it');
    }
    // The start ends with the answer, not with the daemon (which serves on).
    const env = {
      TSSHIM_STATE_DIR: state,
      TSSHIM_SOCKET_DIR: path.join(inst.root, 's'),
      TSSHIM_SPARES: '0',
      FAKE_COLD: 'linger',
    };
    const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'X' });
    assert.deepEqual(r, { status: 0, out: 'NODE-DECIDES stdin=X' });
    const daemon = JSON.parse(fs.readFileSync(path.join(inst.root, 'cold-session'), 'utf8')).pid as number;
    try {
      assert.doesNotThrow(() => process.kill(daemon, 0), 'the start returned while its daemon still runs');
    } finally {
      try {
        process.kill(daemon, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  } finally {
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: Node boots without NODE_EXTRA_CA_CERTS (set aside, restored by restoreExtraCaCerts), cold or as start; unset stays unset', () => {
  const inst = fakeInstall();
  try {
    const base = coldStartEnv(inst);
    const nodeEnv = (): NodeJS.ProcessEnv => {
      const e = JSON.parse(fs.readFileSync(path.join(inst.root, 'node-env'), 'utf8')) as Record<string, string | null>;
      return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== null)) as NodeJS.ProcessEnv;
    };
    for (const value of ['/etc/ssl/some ca.crt', '']) {
      for (const extra of [{}, { TSSHIM_NO_FAST_PATH: '1' }] as Record<string, string>[]) {
        const env = { ...base, ...extra, NODE_EXTRA_CA_CERTS: value };
        const r = inst.run(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'X' });
        assert.equal(r.status, 0, r.out);
        const seen = nodeEnv();
        assert.deepEqual(seen, { NODE_EXTRA_CA_CERTS: '', TSSHIM_SAVED_NODE_EXTRA_CA_CERTS: value });
        restoreExtraCaCerts(seen);
        assert.deepEqual(seen, { NODE_EXTRA_CA_CERTS: value }, 'restored as the start had it');
        assert.deepEqual(nodeChildEnv({ NODE_EXTRA_CA_CERTS: value, A: 'b' }), {
          NODE_EXTRA_CA_CERTS: '',
          TSSHIM_SAVED_NODE_EXTRA_CA_CERTS: value,
          A: 'b',
        });
      }
    }
    const r = inst.run(START_ARGS, { cwd: bundleDir(inst.root), env: base, input: 'X' });
    assert.equal(r.status, 0, r.out);
    assert.deepEqual(nodeEnv(), {}, 'not set: nothing set aside');
    assert.deepEqual(nodeChildEnv({ A: 'b' }), { A: 'b' });
  } finally {
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: no empty or relative PATH and LD_LIBRARY_PATH entries reach the programs it runs (the bundle is their cwd), cold or as start', () => {
  const inst = fakeInstall();
  try {
    const base = coldStartEnv(inst);
    const nodeDir = path.dirname(process.execPath);
    const cases: [Record<string, string>, { LD_LIBRARY_PATH: string | null; PATH: string }][] = [
      // containerd's opt plugin, with nothing in LD_LIBRARY_PATH before it
      [
        { LD_LIBRARY_PATH: '/opt/containerd/lib:', PATH: `${nodeDir}:/usr/bin:/bin` },
        { LD_LIBRARY_PATH: '/opt/containerd/lib', PATH: `${nodeDir}:/usr/bin:/bin` },
      ],
      [
        { LD_LIBRARY_PATH: ':lib:.', PATH: `:${nodeDir}::bin:/bin:` },
        { LD_LIBRARY_PATH: null, PATH: `${nodeDir}:/bin` },
      ],
      [
        { LD_LIBRARY_PATH: '/a:/b', PATH: `${nodeDir}:/bin` },
        { LD_LIBRARY_PATH: '/a:/b', PATH: `${nodeDir}:/bin` },
      ],
    ];
    for (const [given, expected] of cases) {
      for (const extra of [{}, { TSSHIM_NO_FAST_PATH: '1' }] as Record<string, string>[]) {
        const what = `${JSON.stringify(given)} ${JSON.stringify(extra)}`;
        fs.rmSync(path.join(inst.root, 'node-paths'), { force: true });
        const r = inst.run(START_ARGS, { cwd: bundleDir(inst.root), env: { ...base, ...extra, ...given }, input: 'X' });
        assert.equal(r.status, 0, `${what}: ${r.out}`);
        assert.deepEqual(JSON.parse(fs.readFileSync(path.join(inst.root, 'node-paths'), 'utf8')), expected, what);
      }
    }
  } finally {
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test('sh wrapper: a cold start whose daemon dies before it answers leaves the start to Node with the request intact, or fails it when the request was half read', async () => {
  const inst = fakeInstall();
  try {
    const state = path.join(inst.root, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    for (const [mode, expected] of [
      ['die-unread', { status: 0, out: 'NODE-DECIDES stdin=OPTS %s\\n' }],
      ['die-read', { status: 0, out: 'NODE-DECIDES stdin=OPTS %s\\n' }],
      [
        'die-reading',
        {
          status: 1,
          out: 'containerd-shim-tsshim-v2: start: the daemon of a cold start ended while it read the request\n',
        },
      ],
    ] as const) {
      for (const how of ['sync', 'async']) {
        const env = {
          TSSHIM_STATE_DIR: state,
          TSSHIM_SOCKET_DIR: path.join(inst.root, 's'),
          TSSHIM_SPARES: '0',
          FAKE_COLD: mode,
        };
        const opts = { cwd: bundleDir(inst.root), env, input: 'OPTS %s\\n' };
        const r = how === 'sync' ? inst.run(START_ARGS, opts) : await inst.runAsync(START_ARGS, opts);
        assert.deepEqual(r, expected, `${mode} (${how})`);
        if (expected.status === 0) assert.equal(nodeArgv(inst).at(-1), 'start', `${mode}: Node's own start answered`);
      }
    }
  } finally {
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// The claim of a warm spare (src/shim/spare.ts answerClaim): the sh rings and waits with builtins
// only; the spare takes stdin and environment from /proc and answers in its line on `resp`.

type FakeSpareBehaviour =
  'answer' | 'take-stdin-and-die' | 'die' | 'hang' | 'take-stdin-and-stop' | 'hang-while-taking-stdin';

/**
 * A Node process that waits in `pool` as a spare of ADDRESS would (title, req and resp fifos, resp
 * held read-write) and, once rung, does `behaviour`: answer as spare.ts does; die after taking
 * stdin, or at once; never answer (`hang`); take stdin and stop (SIGSTOP); or stay in the middle of
 * taking stdin (`.stdin` made, the pipe read, no `stdin`). `ended` resolves with how it ended.
 */
function fakeSpare(
  pool: string,
  behaviour: FakeSpareBehaviour
): { pid: number; ready: Promise<void>; ended: Promise<{ code: number | null; signal: string | null }> } {
  const script = `
    const fs = require('fs'), path = require('path');
    const behaviour = ${JSON.stringify(behaviour)};
    process.title = 'containerd-shim-tsshim-v2 spare -address ' + ${JSON.stringify(ADDRESS)};
    const pool = ${JSON.stringify(pool)}, home = path.join(pool, String(process.pid));
    fs.mkdirSync(home, { recursive: true, mode: 0o700 });
    for (const f of ['req', 'resp']) require('child_process').execFileSync('mkfifo', [path.join(home, f)]);
    const req = fs.openSync(path.join(home, 'req'), fs.constants.O_RDWR);
    const resp = fs.openSync(path.join(home, 'resp'), fs.constants.O_RDWR);
    process.stdout.write('ready\\n');
    const buf = Buffer.alloc(4096);
    const n = fs.readSync(req, buf); // blocks until rung
    const dir = buf.toString('utf8', 0, n).trim();
    const startPid = fs.readFileSync(path.join(dir, 'startpid'), 'utf8').trim();
    const forever = () => setInterval(() => {}, 1000);
    if (behaviour === 'die') process.exit(3);
    if (behaviour === 'hang') return forever();
    const marker = fs.openSync(path.join(dir, '.stdin'), 'wx');
    const stdin = fs.readFileSync('/proc/' + startPid + '/fd/3', 'utf8'); // a pipe: runAsync
    if (behaviour === 'hang-while-taking-stdin') return forever();
    fs.writeSync(marker, stdin);
    fs.renameSync(path.join(dir, '.stdin'), path.join(dir, 'stdin'));
    if (behaviour === 'take-stdin-and-die') process.exit(3);
    if (behaviour === 'take-stdin-and-stop') {
      process.kill(process.pid, 'SIGSTOP');
      return forever();
    }
    const env = fs.readFileSync('/proc/' + startPid + '/environ', 'utf8').split('\\0');
    const cwd = fs.readFileSync(path.join(dir, 'cwd'), 'utf8').trim();
    const answer = 'SPARE stdin=' + stdin + ' ' + env.filter((kv) => kv.startsWith('MARK=')).join() + ' cwd=' + cwd;
    fs.writeSync(resp, '0 fmt ' + (${answerFormat.toString()})(Buffer.from(answer)) + '\\n');
    fs.rmSync(dir, { recursive: true, force: true });
  `;
  const p = spawn(process.execPath, ['-e', `(() => {${script}})()`, '--', '.'.repeat(200)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ended = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    p.once('exit', (code, signal) => resolve({ code, signal }))
  );
  const ready = new Promise<void>((resolve, reject) => {
    p.stdout!.once('data', () => resolve());
    p.once('exit', (code) => reject(new Error(`fake spare exited ${code} before it was ready`)));
  });
  return { pid: p.pid!, ready, ended };
}

/** A state dir, its pool and a fake spare waiting there with `behaviour`. */
async function withFakeSpare(
  behaviour: FakeSpareBehaviour
): Promise<{ inst: Install; state: string; pool: string; spare: ReturnType<typeof fakeSpare> }> {
  const inst = fakeInstall();
  const state = path.join(inst.root, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  const pool = path.join(state, 'spares', POOL_HASH);
  const spare = fakeSpare(pool, behaviour);
  await spare.ready;
  return { inst, state, pool, spare };
}

const SHELLS = ['/bin/sh', ...(fs.existsSync('/bin/bash') ? ['/bin/bash'] : [])];

test('sh wrapper: a warm spare found by its title takes stdin and environment from the start and answers in its line', async () => {
  for (const shell of SHELLS) {
    const { inst, state, pool, spare } = await withFakeSpare('answer');
    try {
      const bundle = bundleDir(inst.root);
      const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's'), MARK: 'x y %s \\n' };
      const r = await inst.runAsync(START_ARGS, { cwd: bundle, env, input: 'OPTS', shell });
      assert.deepEqual(r, { status: 0, out: `SPARE stdin=OPTS MARK=x y %s \\n cwd=${bundle}` }, shell);
      assert.ok(!fs.existsSync(path.join(inst.root, 'node-argv')), `${shell}: Node was not asked`);
      // The spare removes its claimed directory after it answered: look once it has ended.
      assert.deepEqual(await spare.ended, { code: 0, signal: null });
      assert.deepEqual(fs.readdirSync(pool), [], `${shell}: the claimed directory is gone`);
    } finally {
      kill(spare.pid);
      fs.rmSync(inst.root, { recursive: true, force: true });
    }
  }
});

test('sh wrapper: the warm path checks ownership with builtins (no find); a spare whose directory is not ours is passed over', async () => {
  // Mode bits need find; the spare answers for them instead (it never waits in a pool others can
  // write to: spare.ts waitForClaim). The claim is a builtin's O_EXCL file: no mv (dash's answer
  // timer is a fork of the shell, not a program on PATH).
  {
    const { inst, state, spare } = await withFakeSpare('answer');
    try {
      const programs = programLog(inst.root);
      const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's'), PATH: programs.path };
      const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS' });
      assert.equal(r.status, 0);
      assert.match(r.out, /^SPARE stdin=OPTS/);
      assert.deepEqual(programs.ran(), [], 'the claim runs no program: no mv, no find');
    } finally {
      kill(spare.pid);
      fs.rmSync(inst.root, { recursive: true, force: true });
    }
  }
  // The same spare, its directory another user's (as if planted): not claimed, Node decides.
  const { inst, state, pool, spare } = await withFakeSpare('answer');
  try {
    const home = path.join(pool, String(spare.pid));
    fs.chownSync(home, 65534, 65534);
    const env = { TSSHIM_STATE_DIR: state, TSSHIM_SOCKET_DIR: path.join(inst.root, 's') };
    const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS' });
    assert.equal(r.out, 'NODE-DECIDES stdin=OPTS', 'Node decides, with the request intact');
    assert.ok(!fs.existsSync(path.join(home, 'claimed')), 'the spare directory was not claimed');
  } finally {
    kill(spare.pid);
    fs.rmSync(inst.root, { recursive: true, force: true });
  }
});

test("sh wrapper: answerFormat's format makes the sh's printf print every byte as it was", () => {
  const bytes = Buffer.from([...Array(256).keys(), 0x25, 0x73, 0x5c, 0x6e, 0x30, 0x31, 0x20, 0x0a]);
  for (const shell of SHELLS) {
    const fmt = answerFormat(bytes);
    assert.doesNotMatch(fmt, /[\s]/, 'no blank or newline: it ends the line');
    const r = spawnSync(shell, ['-c', 'IFS=" " read -r status how answer; printf "$answer"'], {
      input: `0 fmt ${fmt}\n`,
    });
    assert.equal(r.status, 0, shell);
    assert.deepEqual(r.stdout, bytes, shell);
  }
});

/** The start's environment for a claim from the fake spare's pool, with the answer's bound in seconds. */
const claimEnv = (root: string, state: string, bound: string) => ({
  TSSHIM_STATE_DIR: state,
  TSSHIM_SOCKET_DIR: path.join(root, 's'),
  TSSHIM_SPARE_ANSWER_TIMEOUT: bound,
});

test('sh wrapper: a warm spare that dies once claimed (before or after taking stdin) leaves the start to Node with the request intact, without waiting for the bound', async () => {
  for (const shell of SHELLS) {
    for (const behaviour of ['die', 'take-stdin-and-die'] as const) {
      const { inst, state, spare } = await withFakeSpare(behaviour);
      try {
        // A bound longer than runAsync lets the start run: only the spare's end can end the wait.
        const env = claimEnv(inst.root, state, '3600');
        const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS', shell });
        assert.deepEqual(r, { status: 0, out: 'NODE-DECIDES stdin=OPTS' }, `${shell} ${behaviour}`);
        assert.deepEqual(await spare.ended, { code: 3, signal: null });
      } finally {
        kill(spare.pid);
        fs.rmSync(inst.root, { recursive: true, force: true });
      }
    }
  }
});

test('sh wrapper: a claimed spare that never answers (wedged, or stopped) is killed once the bound passes, and Node answers the start with the request intact', async () => {
  for (const shell of SHELLS) {
    for (const behaviour of ['hang', 'take-stdin-and-stop'] as const) {
      const { inst, state, pool, spare } = await withFakeSpare(behaviour);
      try {
        const env = claimEnv(inst.root, state, '1');
        const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS', shell });
        assert.deepEqual(r, { status: 0, out: 'NODE-DECIDES stdin=OPTS' }, `${shell} ${behaviour}: Node answers`);
        assert.deepEqual(nodeArgv(inst).at(-1), 'start', 'as `start`');
        // Killed: it cannot become this container's shim beside the one Node starts.
        assert.deepEqual(await spare.ended, { code: null, signal: 'SIGKILL' }, `${shell} ${behaviour}`);
        assert.deepEqual(fs.readdirSync(pool), [], 'nothing of the claim is left');
      } finally {
        kill(spare.pid);
        fs.rmSync(inst.root, { recursive: true, force: true });
      }
    }
  }
});

test('sh wrapper: a claimed spare that stops while it reads the request leaves no half request to Node: the start fails, and the spare is killed', async () => {
  for (const shell of SHELLS) {
    const { inst, state, spare } = await withFakeSpare('hang-while-taking-stdin');
    try {
      const env = claimEnv(inst.root, state, '1');
      const r = await inst.runAsync(START_ARGS, { cwd: bundleDir(inst.root), env, input: 'OPTS', shell });
      assert.equal(r.status, 1, shell);
      assert.match(r.out, /^containerd-shim-tsshim-v2: start: could not hand the request to a spare in .*\n$/);
      assert.ok(!fs.existsSync(path.join(inst.root, 'node-argv')), `${shell}: Node was not asked`);
      assert.deepEqual(await spare.ended, { code: null, signal: 'SIGKILL' }, shell);
    } finally {
      kill(spare.pid);
      fs.rmSync(inst.root, { recursive: true, force: true });
    }
  }
});
