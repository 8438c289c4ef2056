// Our .proto files against containerd's own (containerd 1.6 and containerd/cgroups from the Debian
// golang-github-containerd-*-dev sources): every upstream field must exist in ours with the same
// number, name, type and label. Ours may add newer fields (2.x / cgroups v3) on unused numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

const GOSRC = '/usr/share/gocode/src';
const CONTAINERD = path.join(GOSRC, 'github.com/containerd/containerd');
const CGROUPS = path.join(GOSRC, 'github.com/containerd/cgroups');

function repoRoot(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'proto')) && fs.existsSync(path.join(dir, 'package.json'))) return dir;
  }
  throw new Error(`repository root not found above ${__dirname}`);
}
const PROTO_DIR = path.join(repoRoot(), 'proto');

function load(dir: string, files: string[], resolve: (target: string) => string): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : resolve(target));
  root.loadSync(
    files.map((f) => path.join(dir, f)),
    { keepCase: true }
  );
  root.resolveAll();
  return root;
}

function upstreamResolve(target: string): string {
  if (target.startsWith('github.com/')) return path.join(GOSRC, target);
  if (target.startsWith('gogoproto/')) return path.join(GOSRC, 'github.com/gogo/protobuf', target);
  if (target.startsWith('google/protobuf/')) return path.join('/usr/include', target); // gogo.proto's descriptor import
  return path.join(GOSRC, target);
}

// upstream file -> our file
const PAIRS: Array<[string, string]> = [
  [path.join(CONTAINERD, 'runtime/v2/task/shim.proto'), 'containerd/task/v2/shim.proto'],
  [path.join(CONTAINERD, 'api/types/mount.proto'), 'containerd/types/mount.proto'],
  [path.join(CONTAINERD, 'api/types/metrics.proto'), 'containerd/types/metrics.proto'],
  [path.join(CONTAINERD, 'api/types/task/task.proto'), 'containerd/v1/types/task.proto'],
  [path.join(CONTAINERD, 'api/events/task.proto'), 'containerd/events/task.proto'],
  [
    path.join(CONTAINERD, 'api/services/ttrpc/events/v1/events.proto'),
    'containerd/services/events/ttrpc/v1/events.proto',
  ],
  [path.join(CONTAINERD, 'runtime/v2/runc/options/oci.proto'), 'containerd/runc/v1/options.proto'],
  [path.join(CONTAINERD, 'pkg/runtimeoptions/v1/api.proto'), 'runtimeoptions/v1/api.proto'],
  [path.join(CGROUPS, 'stats/v1/metrics.proto'), 'io/containerd/cgroups/v1/metrics.proto'],
  [path.join(CGROUPS, 'v2/stats/metrics.proto'), 'io/containerd/cgroups/v2/metrics.proto'],
];

// Upstream declares these in the same file but tsshim does not need them.
const NOT_NEEDED = new Set(['containerd.v1.types.Process']);

const missing = PAIRS.find(([up]) => !fs.existsSync(up));
const skip = missing ? `containerd sources not installed (${missing[0]})` : undefined;

function typesIn(root: protobuf.Root, file: string): Array<protobuf.Type | protobuf.Enum> {
  const out: Array<protobuf.Type | protobuf.Enum> = [];
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const o of ns.nestedArray) {
      if ((o instanceof protobuf.Type || o instanceof protobuf.Enum) && o.filename === file) out.push(o);
      if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) walk(o);
    }
  };
  walk(root);
  return out;
}

const describe = (f: protobuf.Field): string => {
  const type = f.resolvedType ? f.resolvedType.fullName : f.type;
  const key = f instanceof protobuf.MapField ? `map<${f.keyType},` : '';
  return `${f.id} ${f.repeated ? 'repeated ' : ''}${key}${type} ${f.name}`;
};

for (const [upstreamFile, ourFile] of PAIRS) {
  test(`${ourFile} matches ${path.relative(GOSRC, upstreamFile)}`, { skip }, () => {
    const upstream = load(path.dirname(upstreamFile), [path.basename(upstreamFile)], upstreamResolve);
    const ours = load(PROTO_DIR, [ourFile], (t) => path.join(PROTO_DIR, t));
    const upTypes = typesIn(upstream, upstreamFile);
    assert.ok(upTypes.length > 0, 'no upstream types parsed');
    for (const up of upTypes) {
      if (NOT_NEEDED.has(up.fullName.slice(1))) continue;
      const mine = ours.lookup(up.fullName);
      assert.ok(mine, `missing ${up.fullName}`);
      if (up instanceof protobuf.Enum) {
        assert.ok(mine instanceof protobuf.Enum, `${up.fullName} is not an enum`);
        assert.deepStrictEqual({ ...mine.values }, { ...up.values }, up.fullName);
        continue;
      }
      assert.ok(mine instanceof protobuf.Type, `${up.fullName} is not a message`);
      for (const f of up.fieldsArray) {
        const m: protobuf.Field | undefined = mine.fields[f.name];
        assert.ok(m, `${up.fullName}.${f.name} missing`);
        assert.equal(describe(m), describe(f), `${up.fullName}.${f.name}`);
      }
      for (const ourField of mine.fieldsArray) {
        const clash: protobuf.Field | undefined = up.fieldsArray.find(
          (f) => f.id === ourField.id && f.name !== ourField.name
        );
        assert.ok(
          !clash,
          `${up.fullName}: our ${ourField.name} reuses upstream number ${ourField.id} (${clash?.name})`
        );
      }
    }
    const upServices = collectServices(upstream);
    for (const svc of upServices) {
      const mineSvc = ours.lookupService(svc.fullName);
      assert.deepStrictEqual(Object.keys(mineSvc.methods).sort(), Object.keys(svc.methods).sort(), svc.fullName);
      for (const [name, m] of Object.entries(svc.methods)) {
        assert.equal(
          mineSvc.methods[name].resolvedRequestType!.fullName,
          m.resolvedRequestType!.fullName,
          `${svc.fullName}.${name}`
        );
        assert.equal(
          mineSvc.methods[name].resolvedResponseType!.fullName,
          m.resolvedResponseType!.fullName,
          `${svc.fullName}.${name}`
        );
      }
    }
  });
}

function collectServices(ns: protobuf.NamespaceBase): protobuf.Service[] {
  const out: protobuf.Service[] = [];
  for (const o of ns.nestedArray) {
    if (o instanceof protobuf.Service && !o.fullName.startsWith('.google.')) out.push(o);
    if (o instanceof protobuf.Namespace && !(o instanceof protobuf.Service)) out.push(...collectServices(o));
  }
  return out;
}
