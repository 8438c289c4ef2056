// 10. CRI through containerd's cri plugin, the way the kubelet drives it: a containerd of its own with
// the cri plugin on and a runtime handler per shim (`runc` -> io.containerd.runc.v2, `tsshim` ->
// io.containerd.tsshim.v2; test/fixtures/cri/*.toml, as test/e2e/cri.test.ts), host-network pods
// with one and with three `sleep` containers: RunPodSandbox, CreateContainer, StartContainer,
// StopPodSandbox (RemovePodSandbox untimed), handlers interleaved. Shim CPU per call: the pod's shim
// is moved into a cpuacct cgroup after RunPodSandbox (bench/lib/cpu-cgroup.ts). CreateContainer
// does not reach the shim (the cri plugin creates the task in StartContainer). tsshim's own rpc
// durations (Create, Start) come from the debug log, split into the sandbox's and the containers'.
// The measured pods come and go next to one resident pod per handler, as on a node that runs
// pods already; RunPodSandbox is also measured on an empty node (tsshim's cold start).
// containerd's PATH starts with the wrappers of bench/lib/shim-wrap.ts, so StartContainer is also
// split into runc's own wall time (create + start of that container) and the rest.
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, startContainerd, pidAlive, type Containerd } from '../../test/support/harness';
import { buildBusyboxImage, buildPauseImage, importImage, BUSYBOX_IMAGE, PAUSE_IMAGE } from '../../test/support/rootfs';
import { CriClient, type ContainerConfig, type PodSandboxConfig } from '../../test/support/cri-client';
import { readLines } from '../lib/containerd-log';
import { type BenchEnv, type Side, SIDES, logMark } from '../lib/env';
import { shimDaemons, shimPidFor } from '../lib/proc';
import { makeCpuCgroups } from '../lib/cpu-cgroup';
import { makeShimWrap, type ShimWrap } from '../lib/shim-wrap';
import type { Results } from '../lib/results';
import { nowMs, rotate, sleep } from '../lib/stats';

const NAMESPACE = 'k8s.io';
/** The mode of the rows measured with no other pod on the node (tsshim: no spare, a cold start). */
const EMPTY_NODE = 'empty node, 1 container';
const CGROUP_ROOT = `/tsshim-bench-cri-${process.pid}`;
const HANDLER: Record<Side, string> = { runc: 'runc', tsshim: 'tsshim' };

function fixture(name: string, work: string): string {
  return fs
    .readFileSync(path.join(repoRoot(), 'test', 'fixtures', 'cri', name), 'utf8')
    .replaceAll('{{WORK}}', work)
    .replaceAll('{{SANDBOX_IMAGE}}', PAUSE_IMAGE);
}

function podConfig(work: string, side: Side, name: string): PodSandboxConfig {
  const uid = randomUUID();
  const logDir = path.join(work, 'pods', `bench_${name}_${uid}`);
  fs.mkdirSync(logDir, { recursive: true });
  return {
    metadata: { name, uid, namespace: 'bench', attempt: 0 },
    hostname: '',
    log_directory: logDir,
    labels: { 'tsshim-bench': 'true', handler: HANDLER[side] },
    linux: {
      cgroup_parent: `${CGROUP_ROOT}/pod${uid}`,
      security_context: { namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' } },
    },
  };
}

function containerConfig(pod: PodSandboxConfig, name: string): ContainerConfig {
  fs.mkdirSync(path.join(pod.log_directory!, name), { recursive: true });
  return {
    metadata: { name, attempt: 0 },
    image: { image: BUSYBOX_IMAGE },
    command: ['sleep', '1000000'],
    log_path: `${name}/0.log`,
    linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
  };
}

function removeCgroupDirs(): void {
  for (const controller of fs.readdirSync('/sys/fs/cgroup')) {
    const top = path.join('/sys/fs/cgroup', controller, CGROUP_ROOT);
    if (!fs.existsSync(top)) continue;
    const dirs: string[] = []; // deepest first: a cgroup dir goes only once it has no children
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
      dirs.push(d);
    };
    try {
      walk(top);
    } catch {
      continue;
    }
    for (const d of dirs) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* still in use */
      }
    }
  }
}

type Call = 'RunPodSandbox' | 'CreateContainer' | 'StartContainer' | 'StopPodSandbox';
const CALLS: Call[] = ['RunPodSandbox', 'CreateContainer', 'StartContainer', 'StopPodSandbox'];

export async function criSuite(env: BenchEnv, results: Results): Promise<void> {
  const iterations = env.quick ? 2 : 8;
  const work = fs.mkdtempSync(path.join('/tmp', 'tsshim-bench-cri-'));
  for (const d of ['cni/bin', 'cni/net.d', 'runc-root', 'pods', 'images'])
    fs.mkdirSync(path.join(work, d), { recursive: true });
  fs.writeFileSync(path.join(work, 'tsshim.toml'), fixture('tsshim.toml', work));
  let c: Containerd | undefined;
  let cri: CriClient | undefined;
  let wrap: ShimWrap | undefined;
  const ms = new Map<string, number[]>();
  const cg = makeCpuCgroups('cri');
  const push = (k: string, v: number) => {
    if (!Number.isFinite(v)) return;
    if (!ms.has(k)) ms.set(k, []);
    ms.get(k)!.push(v);
  };
  try {
    wrap = makeShimWrap(work, 'cri');
    const PATH = `${wrap.dir}:${path.join(repoRoot(), 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
    c = await startContainerd({
      cri: fixture('cri-plugin.toml', work),
      logLevel: 'debug',
      namespace: NAMESPACE,
      env: { PATH },
    });
    const w = wrap;
    buildBusyboxImage(path.join(work, 'images', 'busybox.tar'));
    buildPauseImage(path.join(work, 'images', 'pause.tar'));
    await importImage(c, path.join(work, 'images', 'busybox.tar'), BUSYBOX_IMAGE, { namespace: NAMESPACE });
    await importImage(c, path.join(work, 'images', 'pause.tar'), PAUSE_IMAGE, { namespace: NAMESPACE });
    cri = new CriClient(c.address);
    await cri.waitForImage(BUSYBOX_IMAGE);
    await cri.waitForImage(PAUSE_IMAGE);
    const client = cri;
    const cd = c;

    /** `keep`: the pod stays (a resident pod); its sandbox id is returned. */
    const pod = async (side: Side, size: number, record: boolean, modeName?: string, keep = false) => {
      const mode = modeName ?? `${size} container${size > 1 ? 's' : ''}`;
      const rec = (call: Call | string, v: number) => {
        if (record) push(`${mode}|${call}|${side}`, v);
      };
      const from = logMark(cd);
      const config = podConfig(work, side, `p${size}-${side}-${randomUUID().slice(0, 8)}`);
      let t0 = nowMs();
      const id = await client.runPodSandbox(config, HANDLER[side]);
      const sandboxMs = nowMs() - t0;
      rec('RunPodSandbox', sandboxMs);
      // Where RunPodSandbox's time goes: the shim's start command (a claimed spare or a cold boot),
      // runc's create + start of the pause container, and the rest (containerd, the cri plugin).
      const sandboxStart = w.starts().find((r) => r.side === side && r.id === id);
      const sandboxRunc = w.runcCalls().filter((r) => r.id === id && (r.command === 'create' || r.command === 'start'));
      if (sandboxStart && sandboxRunc.length === 2) {
        const shimStartMs = sandboxStart.t1 - sandboxStart.t0;
        const runcMs = sandboxRunc.reduce((sum, r) => sum + r.t1 - r.t0, 0);
        rec('RunPodSandbox: shim start command', shimStartMs);
        rec('RunPodSandbox: runc create + start (wall)', runcMs);
        rec('RunPodSandbox minus shim start and runc', sandboxMs - shimStartMs - runcMs);
      }
      const shim = shimPidFor(cd.address, id);
      const adopted = record && shim !== null && cg.adopt(side, shim); // residents stay out of the CPU count
      const cpu = () => (adopted ? cg.usageMs(side) : NaN);
      for (let n = 0; n < size; n++) {
        t0 = nowMs();
        const cid = await client.createContainer(id, containerConfig(config, `c${n}`), config);
        rec('CreateContainer', nowMs() - t0);
        const c0 = cpu();
        t0 = nowMs();
        await client.startContainer(cid);
        const t1 = nowMs();
        const startMs = t1 - t0;
        rec('StartContainer', startMs);
        const runc = w.runcCalls().filter((r) => r.id === cid && (r.command === 'create' || r.command === 'start'));
        if (runc.length === 2) {
          const runcMs = runc.reduce((sum, r) => sum + r.t1 - r.t0, 0);
          rec('runc in StartContainer', runcMs);
          rec('StartContainer minus runc', startMs - runcMs);
          const [create, start] = runc[0].command === 'create' ? runc : [runc[1], runc[0]];
          rec('call -> runc create', create.t0 - t0);
          const shimStart = w.starts().find((r) => r.side === side && r.id === cid);
          if (shimStart) {
            rec('call -> shim start', shimStart.t0 - t0);
            rec('shim start command', shimStart.t1 - shimStart.t0);
            rec('shim start -> runc create', create.t0 - shimStart.t1);
          }
          rec('runc create -> runc start', start.t0 - create.t1);
          rec('runc start -> return', t1 - start.t1);
        }
        rec('cpu StartContainer', cpu() - c0);
      }
      if (keep) return id;
      const c0 = cpu();
      t0 = nowMs();
      await client.stopPodSandbox(id);
      rec('StopPodSandbox', nowMs() - t0);
      rec('cpu StopPodSandbox', cpu() - c0);
      await client.removePodSandbox(id);
      await sleep(40); // the shim's last log lines
      if (side === 'tsshim' && record) {
        // The pod's first Create and first Start are the sandbox's.
        const seen = new Set<string>();
        for (const l of readLines(cd.logFile, from, logMark(cd))) {
          const m = l.fields.method;
          if (l.msg !== 'rpc' || (m !== 'Start' && m !== 'Create')) continue;
          rec(`in-shim ${m} ${seen.has(m) ? 'container' : 'sandbox'}`, Number(l.fields.duration_ms));
          seen.add(m);
        }
      }
      return id;
    };
    for (const side of SIDES) await pod(side, 1, false); // warm-up: page cache
    // A node always runs some pods (kube-proxy, the CNI's daemon set): one resident pod per handler
    // stays up while the measured pods come and go. tsshim keeps a warm spare while a shim of its
    // containerd serves; on an empty node every new pod's shim starts cold (rows below).
    const residents: string[] = [];
    for (const side of SIDES) residents.push(await pod(side, 1, false, undefined, true));
    for (let i = 0; i < iterations; i++) {
      for (const size of [1, 3]) for (const side of rotate(SIDES, i + size)) await pod(side, size, true);
      env.log(`  cri: ${i + 1}/${iterations}`);
    }
    for (const id of residents.splice(0)) {
      await client.stopPodSandbox(id);
      await client.removePodSandbox(id);
    }
    await sleep(500); // the last shims go, and tsshim's spares with them
    for (let i = 0; i < iterations; i++) {
      for (const side of rotate(SIDES, i)) await pod(side, 1, true, EMPTY_NODE);
    }
  } finally {
    if (cri && c) {
      try {
        for (const p of await cri.listPodSandbox({ label_selector: { 'tsshim-bench': 'true' } })) {
          await cri.stopPodSandbox(p.id).catch(() => undefined);
          await cri.removePodSandbox(p.id).catch(() => undefined);
        }
      } catch {
        /* containerd gone */
      }
      cri.close();
    }
    if (c) {
      const shims = shimDaemons(c.address);
      await c.stop();
      for (const pid of shims)
        if (pidAlive(pid)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
    }
    removeCgroupDirs();
    await cg.remove();
    await wrap?.remove();
    fs.rmSync(work, { recursive: true, force: true });
  }
  const target = { text: 'ratio <= 1.0', on: 'ratio' as const, op: '<=' as const, value: 1.0 };
  const sandboxRows = (mode: string) => {
    for (const name of [
      'RunPodSandbox: shim start command',
      'RunPodSandbox: runc create + start (wall)',
      'RunPodSandbox minus shim start and runc',
    ])
      results.add({
        suite: 'cri',
        name,
        mode,
        unit: 'ms',
        runc: ms.get(`${mode}|${name}|runc`) ?? null,
        tsshim: ms.get(`${mode}|${name}|tsshim`) ?? null,
      });
  };
  results.add({
    suite: 'cri',
    name: 'RunPodSandbox',
    mode: EMPTY_NODE,
    unit: 'ms',
    runc: ms.get(`${EMPTY_NODE}|RunPodSandbox|runc`) ?? null,
    tsshim: ms.get(`${EMPTY_NODE}|RunPodSandbox|tsshim`) ?? null,
  });
  sandboxRows(EMPTY_NODE);
  for (const mode of ['1 container', '3 containers']) {
    const get = (k: string, s: Side) => ms.get(`${mode}|${k}|${s}`) ?? null;
    for (const call of CALLS) {
      results.add({
        suite: 'cri',
        name: call,
        mode,
        unit: 'ms',
        runc: get(call, 'runc'),
        tsshim: get(call, 'tsshim'),
        target,
      });
      if (call === 'RunPodSandbox') sandboxRows(mode);
      if (call === 'StartContainer') {
        results.add({
          suite: 'cri',
          name: 'StartContainer: runc create + start (wall)',
          mode,
          unit: 'ms',
          runc: get('runc in StartContainer', 'runc'),
          tsshim: get('runc in StartContainer', 'tsshim'),
        });
        results.add({
          suite: 'cri',
          name: 'StartContainer minus runc',
          mode,
          unit: 'ms',
          runc: get('StartContainer minus runc', 'runc'),
          tsshim: get('StartContainer minus runc', 'tsshim'),
        });
        for (const gap of [
          'call -> runc create',
          'call -> shim start',
          'shim start command',
          'shim start -> runc create',
          'runc create -> runc start',
          'runc start -> return',
        ]) {
          results.add({
            suite: 'cri',
            name: `StartContainer gap: ${gap}`,
            mode,
            unit: 'ms',
            runc: get(gap, 'runc'),
            tsshim: get(gap, 'tsshim'),
          });
        }
      }
      if (call !== 'RunPodSandbox' && call !== 'CreateContainer') {
        results.add({
          suite: 'cri',
          name: `shim CPU: ${call}`,
          mode,
          unit: 'ms',
          runc: get(`cpu ${call}`, 'runc'),
          tsshim: get(`cpu ${call}`, 'tsshim'),
        });
      }
    }
    for (const whose of ['sandbox', 'container']) {
      for (const m of ['Create', 'Start']) {
        const v = get(`in-shim ${m} ${whose}`, 'tsshim');
        if (v)
          results.add({ suite: 'cri', name: `tsshim rpc ${m} of the ${whose} (in-shim)`, mode, unit: 'ms', tsshim: v });
      }
    }
  }
}
