// tsshim installed the way operators install it: `npm pack` of this tree, `npm install -g` of the
// tarball into a private prefix (the machine's global npm is never touched), and a second build
// that differs visibly (its version string) for upgrade tests, made without compiling anything.
//
//   const base = packCurrentTree();                       // once per tree state, cached in the temp dir
//   const next = variantTarball(base, '0.1.0-upgrade.1'); // same code, another version
//   const inst = installTarball(base.file);               // inst.binDir goes first on containerd's PATH
//   installTarball(next.file, inst.prefix);               // the upgrade: over the first install
//   inst.remove();
//
// Dependencies come from npm's cache (--prefer-offline): with a warm cache an install takes ~1-2 s
// and needs no network; with a cold one npm fetches koffi, protobufjs and smol-toml once (~2 s more).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Tarball {
  /** Absolute path of the .tgz. */
  file: string;
  /** The version in its package.json: what `containerd-shim-tsshim-v2 -v` and a shim's inspect report. */
  version: string;
}

export interface InstalledPackage {
  /** The npm prefix it went into (`npm install -g --prefix`). */
  prefix: string;
  /** <prefix>/bin: containerd-shim-tsshim-v2 and tsshim, npm's symlinks into the package. */
  binDir: string;
  /** <prefix>/lib/node_modules/tsshim: where the symlinks lead. */
  packageDir: string;
  /** Removes the prefix (the caller makes sure no shim of it still runs). */
  remove(): void;
}

const PACK_DIR_PREFIX = 'tsshim-pack-';

/** The repository: the nearest ancestor of this file that holds tsshim's package.json. */
function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      if (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).name === 'tsshim') return dir;
    } catch {
      /* keep looking */
    }
    if (path.dirname(dir) === dir) throw new Error(`tsshim repository root not found above ${__dirname}`);
  }
}

/** npm as a child of a test that may itself run under npm: none of the outer npm's settings leak in. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const lower = k.toLowerCase();
    if (lower.startsWith('npm_') && !/^npm_config_(cache|registry|.*proxy|userconfig|strict_ssl|cafile)$/.test(lower))
      continue;
    env[k] = v;
  }
  return env;
}

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', args, {
    cwd,
    env: npmEnv(),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 300_000,
  });
}

/** What `npm pack` would put in the package, cheaply: the file list with sizes and times. */
function treeKey(root: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    const abs = path.join(root, rel);
    const st = fs.statSync(abs);
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(abs).sort()) walk(path.join(rel, name));
    } else if (!path.basename(rel).startsWith('.bundle.')) {
      // V8 code caches: not packed
      h.update(`${rel}\0${st.size}\0${st.mtimeMs}\0`);
    }
  };
  for (const rel of ['package.json', 'bin', 'dist/revision.txt', 'dist/src']) walk(rel);
  return h.digest('hex').slice(0, 16);
}

/** Removes pack caches of earlier tree states that nobody has used for a day. */
function sweepOldPacks(parent: string, keep: string): void {
  for (const name of fs.readdirSync(parent)) {
    if (!name.startsWith(PACK_DIR_PREFIX) || name === keep) continue;
    const dir = path.join(parent, name);
    try {
      if (Date.now() - fs.statSync(dir).mtimeMs > 24 * 3600_000) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* another run removed it */
    }
  }
}

let packed: Tarball | null = null;

/**
 * `npm pack` of the current tree (its built dist/: run `npm run build` first). Packed once per tree
 * state: later calls, also from other test files of the run, reuse the tarball in the temp dir.
 */
export function packCurrentTree(): Tarball {
  if (packed && fs.existsSync(packed.file)) return packed;
  const root = repoRoot();
  if (!fs.existsSync(path.join(root, 'dist', 'src', 'daemon', 'bundle.js'))) {
    throw new Error(`no build in ${root}/dist: run \`npm run build\` first`);
  }
  const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version as string;
  const key = treeKey(root);
  const dir = path.join(os.tmpdir(), `${PACK_DIR_PREFIX}${key}`);
  const file = path.join(dir, `tsshim-${version}.tgz`);
  if (!fs.existsSync(file)) {
    // Packed beside, renamed into place: a concurrent test file never sees half a tarball.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${PACK_DIR_PREFIX}new-`));
    try {
      // --ignore-scripts: prepack would build again; the tests run this very build.
      npm(['pack', '--ignore-scripts', '--pack-destination', tmp, '--loglevel=error'], root);
      fs.mkdirSync(dir, { recursive: true });
      fs.renameSync(path.join(tmp, `tsshim-${version}.tgz`), file);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  const now = new Date();
  fs.utimesSync(dir, now, now);
  sweepOldPacks(os.tmpdir(), path.basename(dir));
  packed = { file, version };
  return packed;
}

/**
 * A second build of the same code that reports `version` instead (package.json inside the package
 * rewritten and the package re-tarred: no TypeScript compiled, no bundle made). `revision`, when
 * given, replaces dist/revision.txt too. The tarball lands next to `base`'s.
 */
export function variantTarball(base: Tarball, version: string, revision?: string): Tarball {
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version))
    throw new Error(`not a semver version npm accepts: ${version}`);
  const file = path.join(path.dirname(base.file), `tsshim-${version}${revision ? `-${revision}` : ''}.tgz`);
  if (fs.existsSync(file)) return { file, version };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `${PACK_DIR_PREFIX}variant-`));
  try {
    execFileSync('tar', ['-xzf', base.file, '-C', work]);
    const pkgFile = path.join(work, 'package', 'package.json');
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
    pkg.version = version;
    fs.writeFileSync(pkgFile, JSON.stringify(pkg, null, 2) + '\n');
    if (revision !== undefined) fs.writeFileSync(path.join(work, 'package', 'dist', 'revision.txt'), revision + '\n');
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    execFileSync('tar', ['-czf', tmp, '--owner=0', '--group=0', '-C', work, 'package']);
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { file, version };
}

/**
 * `npm install -g --prefix <prefix> <tarball>`: into a new temp prefix, or over what `prefix`
 * already holds (an upgrade). Dependencies resolve from npm's cache when they are there.
 */
export function installTarball(tarball: string, prefix?: string): InstalledPackage {
  const into = prefix ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-prefix-'));
  npm(
    ['install', '-g', '--prefix', into, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball],
    into
  );
  const binDir = path.join(into, 'bin');
  for (const name of ['containerd-shim-tsshim-v2', 'tsshim']) {
    if (!fs.existsSync(path.join(binDir, name))) throw new Error(`npm install -g put no ${name} in ${binDir}`);
  }
  return {
    prefix: into,
    binDir,
    packageDir: path.join(into, 'lib', 'node_modules', 'tsshim'),
    remove: () => fs.rmSync(into, { recursive: true, force: true }),
  };
}
