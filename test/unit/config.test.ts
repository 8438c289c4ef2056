// Configuration is read once (src/shim/config.ts): every variable is listed there and in the README,
// and no other module of the shim reads tsshim's variables from process.env.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ENVIRONMENT, readConfig } from '../../src/shim/config';

const REPO = path.resolve(__dirname, '..', '..', '..');
const listed = ENVIRONMENT.flatMap((v) => v.name.split(', '));

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? (e.name === 'gen' ? [] : files(p)) : /\.ts$/.test(e.name) ? [p] : [];
  });
}

test('config: defaults, and each variable changes its field', () => {
  const d = readConfig({});
  assert.deepEqual(
    { ...d, handoff: { ...d.handoff } },
    {
      socketDir: '/run/containerd/s',
      stateDir: '/run/tsshim',
      perNode: false,
      spares: true,
      snapshot: false,
      spareIdleMs: 600_000,
      trim: true,
      metricsSocket: '',
      metricsDir: '',
      runcTimeoutMs: 120_000,
      ttrpcAddress: '',
      handoff: { socket: '', group: '' },
      upgradeStateFile: '',
      upgradeDryRunFile: '',
    }
  );
  const c = readConfig({
    TSSHIM_SOCKET_DIR: '/s',
    TSSHIM_STATE_DIR: '/st',
    TSSHIM_PER_NODE: '1',
    TSSHIM_SPARES: '0',
    TSSHIM_SNAPSHOT: '1',
    TSSHIM_SPARE_IDLE_MS: '5',
    TSSHIM_TRIM: '0',
    TSSHIM_METRICS_SOCKET: '/m.sock',
    TSSHIM_METRICS_DIR: '/md',
    TSSHIM_RUNC_TIMEOUT: '1500ms',
    TTRPC_ADDRESS: '/t',
    TSSHIM_SOCKET: '/sock',
    TSSHIM_GROUP: 'g',
    TSSHIM_UPGRADE_STATE: '/u.json',
    TSSHIM_UPGRADE_DRY_RUN: '/d.json',
  });
  assert.deepEqual(
    { ...c, handoff: { ...c.handoff } },
    {
      socketDir: '/s',
      stateDir: '/st',
      perNode: true,
      spares: false,
      snapshot: true,
      spareIdleMs: 5,
      trim: false,
      metricsSocket: '/m.sock',
      metricsDir: '/md',
      runcTimeoutMs: 1500,
      ttrpcAddress: '/t',
      handoff: { socket: '/sock', group: 'g' },
      upgradeStateFile: '/u.json',
      upgradeDryRunFile: '/d.json',
    }
  );
  assert.equal(
    readConfig({ TSSHIM_RUNC_TIMEOUT: 'soon' }).runcTimeoutMs,
    120_000,
    'an unreadable duration keeps the default'
  );
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.handoff));
});

test('config: every TSSHIM_ variable that src/ or bin/ names is listed, and listed in the README table', () => {
  const named = new Set<string>();
  for (const f of [
    ...files(path.join(REPO, 'src')),
    ...fs.readdirSync(path.join(REPO, 'bin')).map((n) => path.join(REPO, 'bin', n)),
  ]) {
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/\bTSSHIM_[A-Z_]+\b/g)) named.add(m[0]);
  }
  assert.deepEqual(
    [...named].filter((n) => !listed.includes(n)).sort(),
    [],
    'add these to ENVIRONMENT in src/shim/config.ts'
  );
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const rows = readme.split('\n').filter((l) => l.startsWith('| `'));
  for (const name of listed)
    assert.ok(
      rows.some((r) => r.includes('`' + name + '`')),
      `README's Environment table lacks ${name}`
    );
});

test('config: only config.ts reads tsshim variables from the environment (the tsshim CLI excepted)', () => {
  const offenders: string[] = [];
  for (const f of files(path.join(REPO, 'src'))) {
    const rel = path.relative(path.join(REPO, 'src'), f);
    if (rel === path.join('shim', 'config.ts') || rel.startsWith('cli' + path.sep)) continue;
    const text = fs.readFileSync(f, 'utf8');
    for (const m of text.matchAll(/process\.env(?:\.|\[['"])(TSSHIM_[A-Z_]+|TTRPC_ADDRESS)/g))
      offenders.push(`${rel}: ${m[1]}`);
    for (const m of text.matchAll(/\benv\.(TSSHIM_[A-Z_]+)/g)) offenders.push(`${rel}: ${m[1]}`);
  }
  assert.deepEqual(offenders, []);
});
