// tsshim installed the way operators install it: `npm pack`, `npm install -g` of the tarball (into a
// private prefix), and a containerd that finds containerd-shim-tsshim-v2 on its PATH there, with the
// repository's bin/ nowhere on it. Then a newer package installed over the first while its shims
// and a warm spare run: the running container keeps working on the old code, new containers get the
// new one, and a spare of the old install hands its claim on to the new install.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { builtinModules, createRequire } from 'node:module';
import {
  startContainerd,
  uniqueId,
  pidAlive,
  repoRoot,
  selectedRelease,
  TSSHIM_RUNTIME,
  type Containerd,
} from '../support/harness';
import { makeRootfs } from '../support/rootfs';
import {
  installTarball,
  packCurrentTree,
  variantTarball,
  type InstalledPackage,
  type Tarball,
} from '../support/package';
import { sparePool, waitingSpares } from '../../src/shim/spare';
import { snapshotBlob } from '../../src/shim/node-flags';

let c: Containerd;
let rootfs: string;
let inst: InstalledPackage;
let base: Tarball;
let next: Tarball;
const ids: string[] = [];

async function until<T>(fn: () => T | null | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** This process's PATH without any dir of the repository (its bin/ in particular). */
function pathWithoutRepo(): string[] {
  const repo = repoRoot();
  return (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .filter((d) => d && path.resolve(d) !== repo && !path.resolve(d).startsWith(repo + path.sep));
}

/** A command of the installed package, run through npm's symlink in <prefix>/bin. */
function installed(cmd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(path.join(inst.binDir, cmd), args, {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, PATH: [inst.binDir, path.dirname(process.execPath), ...pathWithoutRepo()].join(':') },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const inspect = (id: string) => {
  const r = installed('tsshim', ['inspect', id, '--state', c.state]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { version: string; pid: number };
};
const shimPid = (id: string) => Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
/** The files a process has mapped: a shim of the installed package maps its koffi from there. */
const maps = (pid: number) => fs.readFileSync(`/proc/${pid}/maps`, 'utf8');

async function runDetached(id: string): Promise<number> {
  ids.push(id);
  const r = await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--rootfs', rootfs, id, '/bin/sleep', '1000'], {
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, `ctr run ${id}: ${r.stderr}\n${c.logTail(3000)}`);
  return shimPid(id);
}

/** kill, then delete once the task has stopped, then remove the container. */
async function removeTask(id: string): Promise<void> {
  const kill = await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
  assert.equal(kill.code, 0, kill.stderr);
  const end = Date.now() + 20_000;
  for (;;) {
    const ls = await c.ctr(['task', 'ls']);
    if (ls.stdout.split('\n').some((l) => l.startsWith(id + ' ') && / STOPPED/.test(l))) break;
    assert.ok(Date.now() < end, `${id} did not stop: ${ls.stdout}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const del = await c.ctr(['task', 'delete', id], { timeoutMs: 20_000 });
  assert.equal(del.code, 0, del.stderr);
  assert.equal((await c.ctr(['container', 'rm', id])).code, 0);
  ids.splice(ids.indexOf(id), 1);
}

before(async () => {
  base = packCurrentTree();
  next = variantTarball(base, `${base.version}-upgrade.1`);
  inst = installTarball(base.file);
  // containerd finds the shim only through the prefix: no repository dir on its PATH at all.
  const release = selectedRelease(repoRoot());
  const PATH = [
    inst.binDir,
    ...(release.binDir ? [release.binDir] : []),
    path.dirname(process.execPath),
    ...pathWithoutRepo(),
  ].join(':');
  c = await startContainerd({ env: { PATH, TSSHIM_SNAPSHOT: '1' } }); // the snapshot path of an install too
  rootfs = makeRootfs(c.dir);
});

after(async () => {
  if (c) {
    for (const id of [...ids]) {
      await c.ctr(['task', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
      await c.ctr(['task', 'delete', '--force', id], { timeoutMs: 20_000 }).catch(() => {});
      await c.ctr(['container', 'rm', id]).catch(() => {});
    }
    await c.stop();
  }
  inst?.remove();
});

test('the packed package holds the built code and runs a container through a containerd that finds it on PATH', async () => {
  const listing = spawnSync('tar', ['-tzf', base.file], { encoding: 'utf8' }).stdout.split('\n');
  for (const f of [
    'bin/containerd-shim-tsshim-v2',
    'bin/tsshim',
    'dist/src/daemon/boot.js',
    'dist/src/daemon/bundle.js',
    'dist/src/cli/main.js',
    'dist/revision.txt',
    'package.json',
  ]) {
    assert.ok(listing.includes(`package/${f}`), `${f} in the tarball`);
  }
  assert.deepEqual(
    listing.filter((f) => /^package\/(src|test|proto|dist\/test|node_modules)\//.test(f) || f.endsWith('.v8cache')),
    [],
    'no sources, tests or code caches'
  );
  assert.deepEqual(
    listing.filter((f) => /\/snapshot[^/]*\.blob$|\/snapshot\.key$/.test(f)),
    [],
    "no V8 snapshot: it names the build tree's files"
  );
  // Every module the built code requires resolves in the installed package: the runtime needs no
  // devDependency (npm install -g installs none).
  const unresolved: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, e.name);
      if (e.isDirectory()) walk(file);
      if (!e.isFile() || !file.endsWith('.js')) continue;
      const req = createRequire(file);
      for (const [, , id] of fs.readFileSync(file, 'utf8').matchAll(/require\((['"])([^'"]+)\1\)/g)) {
        if (id.startsWith('node:') || builtinModules.includes(id)) continue;
        try {
          req.resolve(id);
        } catch {
          unresolved.push(`${path.relative(inst.packageDir, file)}: ${id}`);
        }
      }
    }
  };
  walk(path.join(inst.packageDir, 'dist'));
  assert.deepEqual(unresolved, []);
  // npm's links lead into the package; the sh resolves its real place through them.
  assert.equal(
    fs.readlinkSync(path.join(inst.binDir, 'containerd-shim-tsshim-v2')),
    '../lib/node_modules/tsshim/bin/containerd-shim-tsshim-v2'
  );
  const v = installed('containerd-shim-tsshim-v2', ['-v']);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, new RegExp(`Version:\\s+${base.version.replace(/\./g, '\\.')}\\n`));

  const once = uniqueId('pkg-once');
  const r = await c.ctr(
    ['run', '--rm', '--runtime', TSSHIM_RUNTIME, '--rootfs', rootfs, once, '/bin/echo', 'hello from the package'],
    { timeoutMs: 60_000 }
  );
  assert.equal(r.code, 0, r.stderr + c.logTail(3000));
  assert.equal(r.stdout, 'hello from the package\n');
  // That cold start had the install's own snapshot made in the background, for the next ones.
  await until(
    () => snapshotBlob(path.join(inst.packageDir, 'dist/src/daemon')),
    'the installed package made its snapshot',
    60_000
  );

  const id = uniqueId('pkg-a');
  const pid = await runDetached(id);
  assert.ok(maps(pid).includes(path.join(inst.packageDir, 'node_modules')), 'the shim runs from the installed package');
  assert.ok(!maps(pid).includes(path.join(repoRoot(), 'node_modules')), 'not from the repository');
  const ps = installed('tsshim', ['ps', '--state', c.state]);
  assert.equal(ps.code, 0, ps.stderr);
  const row = ps.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s{3,}/))
    .find((x) => x[1] === id);
  assert.ok(row, ps.stdout);
  assert.equal(row[3], 'running');
  assert.equal(Number(row[6]), pid);
  assert.equal(inspect(id).version, base.version);
});

test('npm install -g of a newer package over the running one: old shims keep working, new containers and spares run the new code', async () => {
  const [a] = ids;
  assert.ok(a, 'the first test left a running container');
  const oldShim = shimPid(a);
  // Spares of the old install wait for the next container. Frozen across the install, they cannot
  // retire on their own: the next start claims one with the old code loaded.
  const pool = sparePool(c.address);
  const oldSpares = await until(() => {
    const s = waitingSpares(pool);
    return s.length ? s : null;
  }, 'a spare of the first install');
  for (const pid of oldSpares) process.kill(pid, 'SIGSTOP');
  const b = uniqueId('pkg-b');
  ids.push(b);
  const thaw = () => {
    for (const pid of oldSpares) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
  };
  try {
    installTarball(next.file, inst.prefix);
    const v = installed('containerd-shim-tsshim-v2', ['-v']);
    assert.match(v.stdout, new RegExp(`Version:\\s+${next.version.replace(/\./g, '\\.')}\\n`), v.stdout + v.stderr);

    const run = c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--rootfs', rootfs, b, '/bin/sleep', '1000'], {
      timeoutMs: 60_000,
    });
    // The sh makes `claimed` in a spare's dir when it claims it (spare.ts): then let the spares run again.
    await until(
      () => oldSpares.some((pid) => fs.existsSync(path.join(pool, String(pid), 'claimed'))),
      'an old spare claimed'
    );
    thaw();
    const r = await run;
    assert.equal(r.code, 0, r.stderr + c.logTail(3000));
    assert.ok(!oldSpares.includes(shimPid(b)), 'the stale spare handed the container on');
    assert.equal(inspect(b).version, next.version, 'the new container runs the new install');
    await until(() => oldSpares.every((pid) => !pidAlive(pid)), 'the stale spares gone');
  } finally {
    thaw();
  }

  // The running shim has its code loaded and keeps serving on it.
  assert.equal(shimPid(a), oldShim);
  assert.equal(inspect(a).version, base.version);
  const exec = await c.ctr(['task', 'exec', '--exec-id', 'after-upgrade', a, '/bin/echo', 'still here'], {
    timeoutMs: 30_000,
  });
  assert.equal(exec.code, 0, exec.stderr);
  assert.equal(exec.stdout, 'still here\n');

  // Spares come back from the new install, and the next container gets one.
  const [newSpare] = await until(() => {
    const s = waitingSpares(pool).filter((p) => !oldSpares.includes(p));
    return s.length ? s : null;
  }, 'a spare of the new install');
  const d = uniqueId('pkg-d');
  assert.equal(await runDetached(d), newSpare);
  assert.equal(inspect(d).version, next.version);

  await removeTask(a);
  await until(() => !pidAlive(oldShim), 'the old shim gone after its last container');
  for (const id of [b, d]) await removeTask(id);
});
