// The files tsshim keeps in a container's bundle, next to containerd's config.json: the one module
// that names them and knows their formats. The daemon writes them (container.ts, service.ts,
// rpc.ts); the `delete` subcommand (src/shim/delete.ts) reads them after the daemon may be gone,
// possibly as another tsshim version, and bin/containerd-shim-tsshim-v2 prints the delete response
// from sh. Formats are therefore stable, and options.json/runtime/init.pid/log.json are the ones
// containerd-shim-runc-v2 uses. Kept free of generated protobuf code: `delete` must start fast.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readTrimmed } from '../sys/text-file';

export const BundleFile = {
  /** Runtime options as JSON with the Go shim's field names (snake_case, zero values left out). */
  options: 'options.json',
  /** The runtime binary (Options.binary_name, or empty for runc). */
  runtime: 'runtime',
  /** The init process's pid, written by runc (--pid-file). */
  initPid: 'init.pid',
  /** runc's JSON log (--log), where runc's own error messages are read from. */
  runcLog: 'log.json',
  /** tsshim: the init's exit status, persisted at reap time ({pid, status, at: ms since epoch}). */
  initExit: 'init.exit',
  /** tsshim: the DeleteResponse the daemon sent for the init, for the `delete` subcommand's sh fast path. */
  deleteResponse: '.tsshim-delete-response',
  /** The shim's ttrpc address (unix://...), which containerd reads back after a restart; written by
   *  `start` (src/shim/start.ts, and bin/'s sh when it answers from a running group shim). */
  address: 'address',
  /** The pid of the shim daemon serving the container, as the Go shim records it (src/shim/start.ts). */
  shimPid: 'shim.pid',
} as const;

export type BundleFileName = keyof typeof BundleFile;

/** containerd's default runc state root (Options.root unset). */
export const DEFAULT_RUNC_ROOT = '/run/containerd/runc';

/** Path of one of the files above in `bundle`. */
export function bundleFile(bundle: string, name: BundleFileName): string {
  return path.join(bundle, BundleFile[name]);
}

// ---- options.json and runtime ---------------------------------------------------------------------

/** The runtime options options.json records (RuntimeOptions in options.ts has them all). */
export interface RecordedOptions {
  noPivotRoot: boolean;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  binaryName: string;
  root: string;
  criuPath: string;
  systemdCgroup: boolean;
}

/** options.json's text: what the `delete` subcommand needs later, written as the Go shim does. */
export function optionsJson(o: RecordedOptions): string {
  const out: Record<string, unknown> = {};
  const put = (k: string, v: unknown) => {
    if (v) out[k] = v;
  };
  put('no_pivot_root', o.noPivotRoot);
  put('no_new_keyring', o.noNewKeyring);
  put('shim_cgroup', o.shimCgroup);
  put('io_uid', o.ioUid);
  put('io_gid', o.ioGid);
  put('binary_name', o.binaryName);
  put('root', o.root);
  put('criu_path', o.criuPath);
  put('systemd_cgroup', o.systemdCgroup);
  return JSON.stringify(out);
}

/** At Create, before runc runs: how to reach this container's runc state without the daemon. */
export function writeRuntimeFiles(bundle: string, o: RecordedOptions): void {
  fs.writeFileSync(bundleFile(bundle, 'options'), optionsJson(o));
  fs.writeFileSync(bundleFile(bundle, 'runtime'), o.binaryName);
}

/** How the `delete` subcommand runs runc for a bundle. */
export interface RecordedRuntime {
  /** `runtime`, else options.json's binary_name, else 'runc'. */
  binary: string;
  /** options.json's root, else DEFAULT_RUNC_ROOT (without the namespace). */
  root: string;
  systemdCgroup: boolean;
}

/**
 * What writeRuntimeFiles left. Every file may be missing (containerd runs `delete` for bundles whose
 * Create never got that far) or damaged: the defaults are used then, and `warn` hears of the damage.
 */
export function readRuntimeFiles(bundle: string, warn: (msg: string) => void = () => {}): RecordedRuntime {
  let opts: Record<string, unknown> = {};
  const text = readTrimmed(bundleFile(bundle, 'options'));
  if (text) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) opts = parsed as Record<string, unknown>;
      else warn(`${bundleFile(bundle, 'options')}: not a JSON object, using the defaults`);
    } catch (e) {
      warn(`${bundleFile(bundle, 'options')}: ${(e as Error).message}, using the defaults`);
    }
  }
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  return {
    binary: readTrimmed(bundleFile(bundle, 'runtime')) || str(opts.binary_name) || 'runc',
    root: str(opts.root) || DEFAULT_RUNC_ROOT,
    systemdCgroup: opts.systemd_cgroup === true,
  };
}

// ---- init.pid ------------------------------------------------------------------------------------

/** The init's pid as runc wrote it, or 0 when there is none (never created, unreadable). */
export function readInitPid(bundle: string): number {
  const pid = Number(readTrimmed(bundleFile(bundle, 'initPid')));
  return Number.isInteger(pid) && pid > 0 ? pid : 0;
}

// ---- init.exit -----------------------------------------------------------------------------------

export interface InitExit {
  pid: number;
  /** Exit code, or 128 + signal number. */
  status: number;
  /** When the shim reaped it, in milliseconds since the epoch. */
  at: number;
}

/** At reap time, so `delete` reports the real status even if the shim dies before Delete. */
export function writeInitExit(bundle: string, exit: InitExit): void {
  fs.writeFileSync(bundleFile(bundle, 'initExit'), JSON.stringify({ pid: exit.pid, status: exit.status, at: exit.at }));
}

/** The persisted exit, or null when the init never exited under a shim (or the file is damaged). */
export function readInitExit(bundle: string): InitExit | null {
  const text = readTrimmed(bundleFile(bundle, 'initExit'));
  if (!text) return null;
  let v: { pid?: unknown; status?: unknown; at?: unknown };
  try {
    v = JSON.parse(text);
  } catch {
    return null; // a torn write (the shim died mid-write): as if it never exited, like a missing file
  }
  if (!v || typeof v.status !== 'number') return null;
  return {
    pid: typeof v.pid === 'number' ? v.pid : 0,
    status: v.status,
    at: typeof v.at === 'number' && Number.isFinite(v.at) ? v.at : Date.now(),
  };
}

// ---- .tsshim-delete-response -----------------------------------------------------------------------

/**
 * The encoded DeleteResponse of the init, after the daemon cleaned everything up: the `delete`
 * subcommand containerd runs next only prints it (bin/containerd-shim-tsshim-v2 does so from sh).
 * Best effort: returns false when the bundle is gone, and `delete` then takes its Node path, which
 * reports the same exit from init.exit.
 */
export function writeDeleteResponse(bundle: string, reply: Uint8Array): boolean {
  try {
    fs.writeFileSync(bundleFile(bundle, 'deleteResponse'), reply);
    return true;
  } catch {
    return false; // see above: nothing is lost
  }
}

/** What writeDeleteResponse left, or null. */
export function readDeleteResponse(bundle: string): Uint8Array | null {
  try {
    return fs.readFileSync(bundleFile(bundle, 'deleteResponse'));
  } catch {
    return null; // none written (the daemon died, or an old shim): the caller's answer
  }
}
