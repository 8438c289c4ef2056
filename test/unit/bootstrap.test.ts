// `start`'s answer per containerd generation (src/shim/bootstrap.ts): telling BootstrapParams apart
// from runtime options, the 1.7+ environment test, the three output formats decoded the way each
// daemon decodes them, and the options extension reaching startOptions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseBootstrapParams,
  decodeBootstrapParams,
  looksLike17Plus,
  readStartRequest,
  formatStartReply,
  encodeBootstrapResult,
  optionsExtension,
  encodeAny,
  RUNTIME_OPTION_TYPES,
  TASK_API_VERSION,
} from '../../src/shim/bootstrap';
import { KNOWN_OPTION_TYPES, decodeOptions } from '../../src/task/options';
import { startOptions } from '../../src/shim/start-options';
import { readConfig } from '../../src/shim/config';
import { parseFlags } from '../../src/shim/flags';
import { containerd, google } from '../../src/gen/proto';
import { Writer } from 'protobufjs/minimal';

const boot = containerd.runtime.bootstrap.v1;
const ADDR = 'unix:///run/containerd/s/0123456789abcdef';
const flags = { id: 'c1', namespace: 'default', address: '/run/containerd/containerd.sock' };

function runcOptionsAny(o: containerd.runc.v1.IOptions): google.protobuf.IAny {
  return { type_url: 'containerd.runc.v1.Options', value: containerd.runc.v1.Options.encode(o).finish() };
}

function paramsBytes(p: containerd.runtime.bootstrap.v1.IBootstrapParams): Buffer {
  return Buffer.from(boot.BootstrapParams.encode(p).finish());
}

/** What containerd 2.3 writes (core/runtime/v2/command.go): identity, addresses, options as an extension. */
function v23Params(
  opts?: google.protobuf.IAny,
  extra: Partial<containerd.runtime.bootstrap.v1.IBootstrapParams> = {}
): Buffer {
  return paramsBytes({
    instance_id: flags.id,
    namespace: flags.namespace,
    log_level: boot.LogLevel.LOG_LEVEL_DEBUG,
    containerd_version: '2.3.0',
    containerd_ttrpc_address: flags.address + '.ttrpc',
    containerd_grpc_address: flags.address,
    containerd_binary: '/usr/bin/containerd',
    extensions: opts ? [{ value: opts }] : [],
    ...extra,
  });
}

/** Go's parseStartResponse of containerd 1.6 / 1.7-2.2 / 2.3+ (core/runtime/v2/shim.go), in TS. */
function daemonParse(
  generation: '1.6' | '1.7' | '2.3',
  out: Buffer
): { version: number; address: string; protocol: string } {
  if (generation === '2.3') {
    try {
      const r = boot.BootstrapResult.decode(out);
      return { version: r.version, address: r.address, protocol: r.protocol };
    } catch {
      /* fall through to the legacy forms, as containerd does */
    }
  }
  const text = out.toString().trim();
  if (generation !== '1.6') {
    try {
      const j = JSON.parse(text);
      if (j && typeof j === 'object' && j.version >= 2)
        return { version: j.version, address: j.address, protocol: j.protocol };
    } catch {
      /* plain */
    }
  }
  return { version: 2, address: text, protocol: 'ttrpc' };
}

test('option type names in bootstrap.ts match task/options', () => {
  assert.deepEqual([...RUNTIME_OPTION_TYPES], [...KNOWN_OPTION_TYPES]);
});

test('BootstrapParams from containerd 2.3 is recognised and fully decoded', () => {
  const opts = runcOptionsAny({ binary_name: 'crun', shim_cgroup: '/shims' });
  const p = parseBootstrapParams(v23Params(opts, { socket_dir: '/run/c/s' }), 'c1', 'default');
  assert.ok(p);
  assert.equal(p.instance_id, 'c1');
  assert.equal(p.namespace, 'default');
  assert.equal(p.log_level, -4);
  assert.equal(p.containerd_version, '2.3.0');
  assert.equal(p.containerd_ttrpc_address, '/run/containerd/containerd.sock.ttrpc');
  assert.equal(p.containerd_grpc_address, '/run/containerd/containerd.sock');
  assert.equal(p.containerd_binary, '/usr/bin/containerd');
  assert.equal(p.socket_dir, '/run/c/s');
  assert.equal(p.extensions.length, 1);
  assert.equal(p.extensions[0].type_url, 'containerd.runc.v1.Options');
  assert.equal(containerd.runc.v1.Options.decode(p.extensions[0].value).binary_name, 'crun');
});

test('runtime options (an Any) on stdin are not BootstrapParams, though they decode as one', () => {
  const any = Buffer.from(google.protobuf.Any.encode(runcOptionsAny({ binary_name: 'runc', root: '/r' })).finish());
  // The trap containerd documents: field 1/2 of Any land in instance_id/namespace.
  const raw = decodeBootstrapParams(any);
  assert.equal(raw.instance_id, 'containerd.runc.v1.Options');
  assert.equal(parseBootstrapParams(any, 'c1', 'default'), null);
  // Even an id that happens to equal the type_url needs the namespace to match too.
  assert.equal(parseBootstrapParams(any, 'containerd.runc.v1.Options', 'default'), null);
});

test('identity must match the flags exactly; empty and garbage stdin are not BootstrapParams', () => {
  const p = v23Params();
  assert.ok(parseBootstrapParams(p, 'c1', 'default'));
  assert.equal(parseBootstrapParams(p, 'c2', 'default'), null);
  assert.equal(parseBootstrapParams(p, 'c1', 'k8s.io'), null);
  assert.equal(
    parseBootstrapParams(Buffer.alloc(0), '', ''),
    null,
    'empty stdin has empty identity but is no bootstrap'
  );
  assert.equal(parseBootstrapParams(Buffer.from('unix:///run/x'), 'c1', 'default'), null);
  assert.equal(parseBootstrapParams(Buffer.from([0x0a, 0x05, 0x61]), 'c1', 'default'), null, 'truncated');
  assert.throws(
    () => decodeBootstrapParams(Buffer.from([0x0a, 0x05, 0x63, 0x31])),
    'a truncated string is an error, not "c1"'
  );
  assert.throws(() => decodeBootstrapParams(Buffer.from([0x0b, 0x01])), 'field 1 with the wrong wire type');
});

test('older upstream revisions: string log_level and unknown fields are tolerated', () => {
  const w = Writer.create();
  w.uint32(10).string('c1').uint32(18).string('default').uint32(26).string('debug');
  w.uint32((99 << 3) | 0).uint64(7); // a field from a newer containerd
  const p = parseBootstrapParams(Buffer.from(w.finish()), 'c1', 'default');
  assert.ok(p);
  assert.equal(p.log_level, 'debug');
});

test('1.7+ environment test: all three variables, set by the daemon, matching the flags', () => {
  const env = {
    MAX_SHIM_VERSION: '2',
    GRPC_ADDRESS: flags.address,
    NAMESPACE: 'default',
    TTRPC_ADDRESS: flags.address + '.ttrpc',
  };
  assert.equal(looksLike17Plus(env, flags), true);
  assert.equal(looksLike17Plus({ TTRPC_ADDRESS: 'x', GOMAXPROCS: '2' }, flags), false, '1.6 sets only these');
  assert.equal(looksLike17Plus({ ...env, MAX_SHIM_VERSION: undefined }, flags), false);
  assert.equal(looksLike17Plus({ ...env, MAX_SHIM_VERSION: '1' }, flags), false);
  assert.equal(
    looksLike17Plus({ ...env, NAMESPACE: 'k8s.io' }, flags),
    false,
    'an inherited NAMESPACE of another meaning'
  );
  assert.equal(looksLike17Plus({ ...env, GRPC_ADDRESS: '/other.sock' }, flags), false);
});

test('readStartRequest picks the generation and hands the options Any to startOptions', () => {
  const opts = runcOptionsAny({ shim_cgroup: '/tsshim-test', binary_name: 'crun' });
  const anyBytes = Buffer.from(google.protobuf.Any.encode(opts).finish());
  const env17 = { MAX_SHIM_VERSION: '2', GRPC_ADDRESS: flags.address, NAMESPACE: 'default' };

  const r23 = readStartRequest(v23Params(opts), env17, flags);
  assert.equal(r23.generation, 'protobuf', '2.3+ also sets the 1.7 variables; stdin decides');
  assert.deepEqual(r23.options, anyBytes, 'the extension is passed through byte for byte');
  const fl = { ...parseFlags(['-namespace', 'default', '-id', 'c1', 'start']) };
  assert.equal(startOptions(r23.options, fl, readConfig({})).shimCgroup, '/tsshim-test');
  assert.equal(decodeOptions(google.protobuf.Any.decode(r23.options)).binaryName, 'crun');

  const r23none = readStartRequest(v23Params(), env17, flags);
  assert.equal(r23none.generation, 'protobuf');
  assert.equal(r23none.options.length, 0, 'no extension: no options');

  const r17 = readStartRequest(anyBytes, env17, flags);
  assert.equal(r17.generation, 'json');
  assert.equal(r17.options, anyBytes);

  const r16 = readStartRequest(anyBytes, { TTRPC_ADDRESS: 'x' }, flags);
  assert.equal(r16.generation, 'plain');
  assert.equal(readStartRequest(Buffer.alloc(0), {}, flags).generation, 'plain');
});

test('options extension: a known options type wins over other extensions', () => {
  const other = { type_url: 'containerd.io/nri.v1.PluginConfig', value: new Uint8Array([1, 2]) };
  const runc = { type_url: 'containerd.runc.v1.Options', value: new Uint8Array([0x12, 0x01, 0x61]) };
  const p = decodeBootstrapParams(v23Params());
  assert.equal(optionsExtension({ ...p, extensions: [other, runc] }, RUNTIME_OPTION_TYPES), runc);
  assert.equal(
    optionsExtension({ ...p, extensions: [other] }, RUNTIME_OPTION_TYPES),
    other,
    'unknown types go to decodeOptions (defaults)'
  );
  assert.equal(optionsExtension({ ...p, extensions: [] }, RUNTIME_OPTION_TYPES), null);
  assert.deepEqual(google.protobuf.Any.decode(encodeAny(runc)).value, Buffer.from(runc.value));
});

test('each generation gets a reply it decodes to the same address, task v2, ttrpc', () => {
  for (const [gen, daemon] of [
    ['plain', '1.6'],
    ['json', '1.7'],
    ['protobuf', '2.3'],
  ] as const) {
    const out = formatStartReply(ADDR, gen);
    assert.deepEqual(daemonParse(daemon, out), { version: 2, address: ADDR, protocol: 'ttrpc' }, gen);
  }
  // The formats a daemon could not take: 1.6 would dial JSON or protobuf bytes as a socket name.
  assert.notEqual(daemonParse('1.6', formatStartReply(ADDR, 'json')).address, ADDR);
  assert.notEqual(daemonParse('1.6', formatStartReply(ADDR, 'protobuf')).address, ADDR);
  // Plain stays acceptable to every daemon (containerd 2.3's proto.Unmarshal rejects "unix://...").
  assert.throws(() => boot.BootstrapResult.decode(Buffer.from(ADDR)));
  assert.equal(formatStartReply(ADDR, 'plain').toString(), ADDR, 'no newline, like the Go shim');
  assert.deepEqual(JSON.parse(formatStartReply(ADDR, 'json').toString()), {
    version: 2,
    address: ADDR,
    protocol: 'ttrpc',
  });
});

test('BootstrapResult bytes equal the generated encoder and never advertise version 3', () => {
  const mine = encodeBootstrapResult(ADDR);
  const gen = Buffer.from(boot.BootstrapResult.encode({ version: 2, address: ADDR, protocol: 'ttrpc' }).finish());
  assert.deepEqual(mine, gen);
  assert.equal(TASK_API_VERSION, 2);
  const r = boot.BootstrapResult.decode(mine);
  assert.equal(r.capabilities.length, 0);
  assert.equal(r.extensions.length, 0);
});
