// Bounded JSON of specs (src/task/spec-json.ts) and the bounded runtime options file (src/task/options.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Code, TtrpcError } from '../../src/ttrpc';
import { rpcError } from '../../src/task/rpc';
import {
  jsonShape,
  parseSpecJson,
  readBounded,
  readSpecFile,
  PROCESS_SPEC_LIMITS,
  type JsonLimits,
} from '../../src/task/spec-json';
import { decodeOptions, MAX_OPTIONS_FILE_BYTES } from '../../src/task/options';
import { runtimeoptions } from '../../src/gen/proto';

function invalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    const e = rpcError(err);
    assert.ok(e instanceof TtrpcError, String(e));
    assert.equal(e.code, Code.INVALID_ARGUMENT, String(err));
    assert.match(e.message, message);
    return true;
  });
}

test('jsonShape counts depth and values; brackets inside strings and escaped quotes do not count', () => {
  assert.deepEqual(jsonShape('{"a":[1,2,{"b":[]}]}'), { depth: 4, values: 6 });
  assert.deepEqual(jsonShape('["[[[[", "\\"[[[", "\\\\", {"k":"}]"}]'), { depth: 2, values: 5 });
  assert.deepEqual(jsonShape('"just a string"'), { depth: 0, values: 0 });
  assert.equal(
    jsonShape('['.repeat(1000) + ']'.repeat(1000), { maxDepth: 10, maxValues: Infinity }).depth,
    11,
    'stops past the limit'
  );
});

test('parseSpecJson parses a real process spec', () => {
  const spec = {
    args: ['sh', '-c', 'echo [{}]'],
    env: ['PATH=/bin'],
    cwd: '/',
    user: { uid: 0, gid: 0 },
    capabilities: { bounding: ['CAP_KILL'] },
  };
  assert.deepEqual(parseSpecJson(Buffer.from(JSON.stringify(spec)), 'exec process spec', PROCESS_SPEC_LIMITS), spec);
});

test('parseSpecJson refuses too large, too deep, too many values and invalid JSON with INVALID_ARGUMENT naming it', () => {
  const small: JsonLimits = { maxBytes: 1000, maxDepth: 8, maxValues: 50 };
  invalid(
    () => parseSpecJson(Buffer.alloc(1001, 0x20), 'exec process spec', small),
    /^exec process spec is too large: 1001 bytes \(limit 1000\)$/
  );
  invalid(
    () => parseSpecJson('['.repeat(9) + ']'.repeat(9), 'exec process spec', small),
    /^exec process spec is nested too deeply: more than 8 levels$/
  );
  invalid(
    () => parseSpecJson(`[${'0,'.repeat(60)}0]`, 'exec process spec', small),
    /^exec process spec has too many values: more than 50$/
  );
  invalid(() => parseSpecJson('{"args": [', 'exec process spec', small), /^exec process spec is not valid JSON: /);
  assert.deepEqual(parseSpecJson('['.repeat(8) + ']'.repeat(8), 'x', small), [[[[[[[[]]]]]]]]);
});

test('the 4 MiB nested spec of issue 14 is refused quickly, without a stack overflow', () => {
  const half = (1 << 20) / 2 - 8;
  const deep = Buffer.from('['.repeat(half) + ']'.repeat(half));
  const t0 = process.hrtime.bigint();
  invalid(
    () => parseSpecJson(deep, 'exec process spec', PROCESS_SPEC_LIMITS),
    /nested too deeply: more than 64 levels/
  );
  const big = Buffer.from('['.repeat(2 << 20) + ']'.repeat(2 << 20));
  invalid(() => parseSpecJson(big, 'exec process spec', PROCESS_SPEC_LIMITS), /too large/);
  // A bound, not a measurement: JSON.parse took seconds for these; the checks take milliseconds.
  assert.ok(Number(process.hrtime.bigint() - t0) / 1e6 < 2000);
});

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'spec-json-'));
}

test('readSpecFile: stat before reading; a huge file, a directory or a FIFO is refused without reading it', () => {
  const dir = tmpDir();
  try {
    const limits: JsonLimits = { maxBytes: 4096, maxDepth: 8, maxValues: 100 };
    const ok = path.join(dir, 'config.json');
    fs.writeFileSync(ok, '{"annotations":{"a":"b"}}');
    assert.deepEqual(readSpecFile(ok, 'bundle config', limits), { annotations: { a: 'b' } });
    const huge = path.join(dir, 'huge.json');
    fs.writeFileSync(huge, '');
    fs.truncateSync(huge, 100 << 20); // sparse: costs no disk
    invalid(
      () => readSpecFile(huge, 'bundle config', limits),
      /bundle config .*huge\.json is too large: 104857600 bytes \(limit 4096\)/
    );
    invalid(() => readSpecFile(dir, 'bundle config', limits), /is not a regular file/);
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    invalid(() => readSpecFile(fifo, 'bundle config', limits), /is not a regular file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('readBounded reads files stat cannot size (/proc) and stops past the limit', () => {
  assert.ok(
    readBounded('/proc/self/status', 1 << 20, 'status', 0)
      .toString()
      .includes('VmRSS')
  );
  invalid(
    () => readBounded('/proc/self/maps', 16, 'maps', 0),
    /maps \/proc\/self\/maps is too large: more than 16 bytes/
  );
});

function configPathOptions(file: string) {
  return {
    type_url: 'runtimeoptions.v1.Options',
    value: runtimeoptions.v1.Options.encode({ config_path: file }).finish(),
  };
}

test('runtime options ConfigPath: a file over 1 MiB is refused at once with a clear error; a normal one is read', () => {
  const dir = tmpDir();
  try {
    const ok = path.join(dir, 'runtime.toml');
    fs.writeFileSync(ok, 'BinaryName = "/usr/bin/crun"\nSystemdCgroup = true\n');
    const o = decodeOptions(configPathOptions(ok));
    assert.equal(o.binaryName, '/usr/bin/crun');
    assert.equal(o.systemdCgroup, true);
    const huge = path.join(dir, 'huge.toml');
    fs.writeFileSync(huge, '');
    fs.truncateSync(huge, 102 << 20);
    const t0 = Date.now();
    invalid(
      () => decodeOptions(configPathOptions(huge)),
      new RegExp(
        `runtime options file .*huge\\.toml is too large: ${102 << 20} bytes \\(limit ${MAX_OPTIONS_FILE_BYTES}\\)`
      )
    );
    assert.ok(Date.now() - t0 < 2000, 'refused without reading 102 MB');
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    invalid(() => decodeOptions(configPathOptions(fifo)), /runtime options file .*fifo is not a regular file/);
    invalid(
      () => decodeOptions(configPathOptions(path.join(dir, 'missing.toml'))),
      /cannot read runtime options file .*missing\.toml: ENOENT/
    );
    const body = {
      type_url: 'runtimeoptions.v1.Options',
      value: runtimeoptions.v1.Options.encode({ config_body: Buffer.alloc(MAX_OPTIONS_FILE_BYTES + 1, 0x20) }).finish(),
    };
    invalid(() => decodeOptions(body), /config_body is too large/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
