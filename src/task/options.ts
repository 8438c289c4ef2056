// Runtime options as containerd sends them: typed containerd.runc.v1.Options (ctr, CRI with
// runtime_type io.containerd.runc.v2-style options), the generic runtimeoptions.v1.Options
// {type_url, config_path} whose TOML file carries the same fields (CRI with any other runtime), or
// the legacy containerd.linux.runc.CreateOptions that containerd 1.6's Go client sends as task
// options to every runtime not named io.containerd.runc* (WithShimCgroup, IoUid/IoGid).
import * as fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { containerd, runtimeoptions, google } from '../gen/proto';
import { invalidArgument, TaskError } from './errors';
import { readBounded } from './spec-json';
import { RUNTIME_OPTION_TYPE_URLS, TypeUrl } from '../types/typeurls';

/**
 * Largest runtime options document (ConfigPath file or config_body). Real ones are a few lines; a
 * 102 MB file once kept a shim busy for minutes at 1.3 GB RSS after ctr had given up.
 */
export const MAX_OPTIONS_FILE_BYTES = 1 << 20;

export interface RuntimeOptions {
  binaryName: string;
  root: string;
  systemdCgroup: boolean;
  noPivotRoot: boolean;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  criuPath: string;
  criuImagePath: string;
  criuWorkPath: string;
  /** tsshim: share one shim per containerd namespace (per-node mode). */
  perNode: boolean;
}

// options.json, the bundle's record of these options, is bundle-files.ts's.
export { DEFAULT_RUNC_ROOT } from './bundle-files';

export function defaultOptions(): RuntimeOptions {
  return {
    binaryName: '',
    root: '',
    systemdCgroup: false,
    noPivotRoot: false,
    noNewKeyring: false,
    shimCgroup: '',
    ioUid: 0,
    ioGid: 0,
    criuPath: '',
    criuImagePath: '',
    criuWorkPath: '',
    perNode: false,
  };
}

const TOML_KEYS: Record<string, keyof RuntimeOptions> = {
  binaryname: 'binaryName',
  binary_name: 'binaryName',
  root: 'root',
  systemdcgroup: 'systemdCgroup',
  systemd_cgroup: 'systemdCgroup',
  nopivotroot: 'noPivotRoot',
  no_pivot_root: 'noPivotRoot',
  nonewkeyring: 'noNewKeyring',
  no_new_keyring: 'noNewKeyring',
  shimcgroup: 'shimCgroup',
  shim_cgroup: 'shimCgroup',
  iouid: 'ioUid',
  io_uid: 'ioUid',
  iogid: 'ioGid',
  io_gid: 'ioGid',
  criupath: 'criuPath',
  criu_path: 'criuPath',
  criuimagepath: 'criuImagePath',
  criu_image_path: 'criuImagePath',
  criuworkpath: 'criuWorkPath',
  criu_work_path: 'criuWorkPath',
  pernode: 'perNode',
  per_node: 'perNode',
};

/** Options from a TOML document; keys as in containerd's config (BinaryName) or snake_case. */
export function optionsFromToml(text: string, source: string): RuntimeOptions {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw invalidArgument(`invalid runtime options file ${source}: ${(e as Error).message}`);
  }
  const opts = defaultOptions();
  for (const [key, value] of Object.entries(doc)) {
    const field = TOML_KEYS[key.toLowerCase()];
    if (!field) continue;
    const want = typeof opts[field];
    const got = typeof value === 'bigint' ? 'number' : typeof value;
    if (got !== want) throw invalidArgument(`runtime options file ${source}: ${key} must be a ${want}`);
    // The type was checked against the default's just above.
    (opts as unknown as Record<string, unknown>)[field] = typeof value === 'bigint' ? Number(value) : value;
  }
  return opts;
}

function fromRuncOptions(o: containerd.runc.v1.Options): RuntimeOptions {
  return {
    ...defaultOptions(),
    binaryName: o.binary_name,
    root: o.root,
    systemdCgroup: o.systemd_cgroup,
    noPivotRoot: o.no_pivot_root,
    noNewKeyring: o.no_new_keyring,
    shimCgroup: o.shim_cgroup,
    ioUid: o.io_uid,
    ioGid: o.io_gid,
    criuPath: o.criu_path,
    criuImagePath: o.criu_image_path,
    criuWorkPath: o.criu_work_path,
  };
}

/**
 * The legacy message's fields that mean something to a v2 shim. open_tcp, external_unix_sockets,
 * terminal, file_locks, empty_namespaces and cgroups_mode were restore flags of the old v1 runtime:
 * the Go v2 shim's restore passes none of them to runc either, and neither do we.
 */
function fromLegacyCreateOptions(o: containerd.linux.runc.CreateOptions): RuntimeOptions {
  return {
    ...defaultOptions(),
    noPivotRoot: o.no_pivot_root,
    noNewKeyring: o.no_new_keyring,
    shimCgroup: o.shim_cgroup,
    ioUid: o.io_uid,
    ioGid: o.io_gid,
    criuWorkPath: o.criu_work_path,
    criuImagePath: o.criu_image_path,
  };
}

/** The old runtime's own options: which runc, its root, CRIU, systemd cgroups. */
function fromLegacyRuncOptions(o: containerd.linux.runc.RuncOptions): RuntimeOptions {
  return {
    ...defaultOptions(),
    binaryName: o.runtime,
    root: o.runtime_root,
    criuPath: o.criu_path,
    systemdCgroup: o.systemd_cgroup,
  };
}

export const LEGACY_CREATE_OPTIONS = TypeUrl.LegacyCreateOptions;
export const LEGACY_RUNC_OPTIONS = TypeUrl.LegacyRuncOptions;
export const KNOWN_OPTION_TYPES = RUNTIME_OPTION_TYPE_URLS;

export function decodeOptions(any: google.protobuf.IAny | null | undefined): RuntimeOptions {
  if (!any || !any.type_url) return defaultOptions();
  const value = any.value ?? new Uint8Array();
  const type = any.type_url.replace(/^.*\//, '');
  switch (type) {
    case TypeUrl.RuncOptions:
      return fromRuncOptions(containerd.runc.v1.Options.decode(value));
    case LEGACY_CREATE_OPTIONS:
      return fromLegacyCreateOptions(containerd.linux.runc.CreateOptions.decode(value));
    case LEGACY_RUNC_OPTIONS:
      return fromLegacyRuncOptions(containerd.linux.runc.RuncOptions.decode(value));
    case TypeUrl.RuntimeOptions: {
      const o = runtimeoptions.v1.Options.decode(value);
      if (o.config_body && o.config_body.length) {
        if (o.config_body.length > MAX_OPTIONS_FILE_BYTES) {
          throw invalidArgument(
            `runtime options config_body is too large: ${o.config_body.length} bytes (limit ${MAX_OPTIONS_FILE_BYTES})`
          );
        }
        return optionsFromToml(Buffer.from(o.config_body).toString('utf8'), 'config_body');
      }
      if (!o.config_path) return defaultOptions();
      return optionsFromToml(readOptionsFile(o.config_path), o.config_path);
    }
    default:
      // The Go shim fails on foreign option types; we run with defaults (the caller logs it).
      return defaultOptions();
  }
}

/** The ConfigPath file's text: stat first so a huge file is refused before any of it is read. */
export function readOptionsFile(file: string): string {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw invalidArgument(`runtime options file ${file} is not a regular file`);
    if (st.size > MAX_OPTIONS_FILE_BYTES) {
      throw invalidArgument(
        `runtime options file ${file} is too large: ${st.size} bytes (limit ${MAX_OPTIONS_FILE_BYTES})`
      );
    }
    return readBounded(file, MAX_OPTIONS_FILE_BYTES, 'runtime options file', st.size).toString('utf8');
  } catch (e) {
    if (e instanceof TaskError) throw e;
    throw invalidArgument(`cannot read runtime options file ${file}: ${(e as Error).message}`);
  }
}
