// The POSIX sh entry (bin/containerd-shim-tsshim-v2): its group computation must agree with
// src/shim/address.ts groupKey, or the fast path would hand a container to the wrong shim.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { groupKey } from '../../src/shim/address';

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
    const r = spawnSync('sh', ['-c', `${shFunction('group_of')}\ngroup_of "$1"; printf '%s' "$group"`, 'sh', id], { cwd: dir, encoding: 'utf8' });
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
    { other: 'x' },
    {},
  ];
  for (const annotations of cases) {
    const json = JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, annotations, linux: {} });
    assert.equal(shGroupOf(json, 'ctr1'), groupKey('ctr1', annotations), json);
  }
});

test('sh wrapper: group_of leaves escaped values, paths, other layouts and a missing file to Node', () => {
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.containerd.tsshim.v2.group': 'a"b' } }), 'c'), '');
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.containerd.tsshim.v2.group': 'a/../b' } }), 'c'), '');
  assert.equal(shGroupOf(JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'x' } }, null, 2), 'c'), '');
  assert.equal(shGroupOf(null, 'c'), '');
});

function readCmdline(pid: string): string {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; }
}

test('sh wrapper: is_shim accepts a process titled as a tsshim daemon, not a recycled pid', () => {
  const fn = shFunction('is_shim');
  const check = (pid: string) => spawnSync('sh', ['-c', `${fn}\nis_shim "$1"`, 'sh', pid]).status;
  const fake = spawnSync('bash', ['-c', 'exec -a containerd-shim-tsshim-v2 sleep 5 >/dev/null 2>&1 </dev/null & echo $!'], { encoding: 'utf8' });
  const pid = fake.stdout.trim();
  try {
    // The background child may not have exec'd yet when bash returns.
    for (let i = 0; i < 100 && !readCmdline(pid).startsWith('containerd-shim-tsshim-v2'); i++) spawnSync('sleep', ['0.02']);
    assert.equal(check(pid), 0);
    assert.equal(check(String(process.pid)), 1, 'node itself is not a shim');
    assert.equal(check('999999999'), 1);
    assert.equal(check('12abc'), 1);
    assert.equal(check(''), 1);
  } finally {
    try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
  }
});
