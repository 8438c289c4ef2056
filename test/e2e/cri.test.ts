// The Kubernetes path: a private containerd with its cri plugin, driven through CRI runtime.v1 the
// way the kubelet drives it, once with the reference shim (handler `runc`, io.containerd.runc.v2)
// and once with ours (handler `tsshim`, io.containerd.tsshim.v2), so every difference shows up as
// a failing step of the second suite. Pods use the host network (no CNI here); pid/ipc are not host.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startContainerd, repoRoot, pidAlive, type Containerd } from '../support/harness';
import { shimLeft } from '../support/containers';
import { buildBusyboxImage, buildPauseImage, importImage, BUSYBOX_IMAGE, PAUSE_IMAGE } from '../support/rootfs';
import { criPluginConfig, renderCriFixture } from '../support/cri-config';
import {
  CriClient,
  CriError,
  type ContainerConfig,
  type ContainerStatus,
  type LinuxContainerResources,
  type PodSandboxConfig,
} from '../support/cri-client';
import { until } from '../support/wait';
import * as grpc from '@grpc/grpc-js';

const K8S_NAMESPACE = 'k8s.io';
const ALL_HANDLERS = ['runc', 'tsshim'] as const;
type Handler = (typeof ALL_HANDLERS)[number];
/** CRI_E2E_HANDLERS=runc (comma list) narrows the run, e.g. to prove the suite with runc alone. */
const HANDLERS: Handler[] = process.env.CRI_E2E_HANDLERS
  ? ALL_HANDLERS.filter((h) => process.env.CRI_E2E_HANDLERS!.split(',').includes(h))
  : [...ALL_HANDLERS];
const RUNTIME_TYPE: Record<Handler, string> = { runc: 'io.containerd.runc.v2', tsshim: 'io.containerd.tsshim.v2' };
const MiB = 1024 * 1024;
/** Cgroup parent of every pod of this run (cgroupfs driver: pod cgroup = parent, container = parent/<id>). */
const CGROUP_ROOT = `/tsshim-cri-${process.pid}`;
/** A container that logs, ends cleanly on SIGTERM (within ~1 s: the trap runs after `sleep 1`). */
const TICKER = [
  'sh',
  '-c',
  'echo hello; echo oops >&2; trap "echo bye; exit 0" TERM; while :; do echo tick; sleep 1; done',
];

let containerd: Containerd | undefined;
let cri: CriClient;
let work = '';

// ---------------------------------------------------------------------------------------------
// helpers

/** CRI calls fail while a pod or container settles: an error counts as "not yet". */
const waitFor = <T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000) =>
  until(fn, what, { timeoutMs, everyMs: 100, retryErrors: true });

function logTail(): string {
  return containerd ? `\n--- containerd log tail ---\n${containerd.logTail(6000)}` : '';
}

interface Pod {
  id: string;
  config: PodSandboxConfig;
  logDir: string;
  cgroupParent: string;
}

function podConfig(handler: Handler, name: string): PodSandboxConfig {
  const uid = randomUUID();
  const podNamespace = 'tsshim-e2e';
  const logDir = path.join(work, 'pods', `${podNamespace}_${name}_${uid}`);
  fs.mkdirSync(logDir, { recursive: true }); // the kubelet makes the pod log dir, not the runtime
  return {
    metadata: { name, uid, namespace: podNamespace, attempt: 0 },
    hostname: '',
    log_directory: logDir,
    labels: { 'tsshim-e2e': 'true', handler },
    annotations: { 'tsshim.test/pod': name },
    linux: {
      cgroup_parent: `${CGROUP_ROOT}/pod${uid}`,
      security_context: { namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' } },
    },
  };
}

async function runPod(handler: Handler, name: string): Promise<Pod> {
  const config = podConfig(handler, name);
  const id = await cri.runPodSandbox(config, handler);
  return { id, config, logDir: config.log_directory!, cgroupParent: config.linux!.cgroup_parent! };
}

function containerConfig(
  pod: Pod,
  name: string,
  command: string[],
  resources?: LinuxContainerResources
): ContainerConfig {
  fs.mkdirSync(path.join(pod.logDir, name), { recursive: true });
  return {
    metadata: { name, attempt: 0 },
    image: { image: BUSYBOX_IMAGE },
    command,
    log_path: `${name}/0.log`,
    labels: { 'tsshim-e2e': 'true' },
    annotations: { 'tsshim.test/container': name },
    linux: {
      resources,
      security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
}

async function createAndStart(pod: Pod, config: ContainerConfig): Promise<string> {
  const id = await cri.createContainer(pod.id, config, pod.config);
  await cri.startContainer(id);
  return id;
}

async function status(id: string): Promise<ContainerStatus> {
  return (await cri.containerStatus(id)).status;
}

/** The container's init pid, from ContainerStatus verbose info (the cri plugin's JSON). */
async function containerPid(id: string): Promise<number> {
  const r = await cri.containerStatus(id, true);
  const info = JSON.parse(r.info.info ?? '{}');
  assert.ok(Number.isInteger(info.pid) && info.pid > 0, `no pid in verbose ContainerStatus info: ${r.info.info}`);
  return info.pid;
}

async function waitExited(id: string, timeoutMs = 20_000): Promise<ContainerStatus> {
  return waitFor(
    `container ${id.slice(0, 12)} to exit`,
    async () => {
      const s = await status(id);
      return s.state === 'CONTAINER_EXITED' ? s : undefined;
    },
    timeoutMs
  );
}

function cgroupFile(controller: string, pod: Pod, containerId: string, file: string): string {
  return fs.readFileSync(path.join('/sys/fs/cgroup', controller, pod.cgroupParent, containerId, file), 'utf8').trim();
}

function readArgv(pid: number): string[] | null {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    // A tsshim daemon has NUL-separated argv like the Go shim; a spare one space-separated title.
    return argv.length === 1 ? argv[0].split(' ') : argv;
  } catch {
    return null;
  }
}

function ppidOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

interface ShimProcess {
  pid: number;
  id: string;
  runtime: Handler | 'other';
}

/**
 * Long-running shim daemons of our containerd, found by walking /proc: argv with `-address <ours>`
 * and `-id <id>`, and no `start`/`delete` action. The Go shim's argv[0] is its binary; tsshim's
 * daemon is `node <repo>/dist/src/daemon/main.js ...` (its binary name is not in the daemon's argv).
 */
function shimProcesses(): ShimProcess[] {
  if (!containerd) return [];
  const out: ShimProcess[] = [];
  const tsshimMain = path.join(repoRoot(), 'dist', 'src', 'daemon', 'main.js');
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const argv = readArgv(pid);
    if (!argv || !pidAlive(pid)) continue;
    const flag = (f: string): string | undefined => {
      const i = argv.findIndex((a) => a === f || a === `-${f}`);
      return i >= 0
        ? argv[i + 1]
        : argv.find((a) => a.startsWith(`${f}=`) || a.startsWith(`-${f}=`))?.replace(/^-*[a-z]+=/, '');
    };
    if (flag('-address') !== containerd.address) continue;
    const id = flag('-id');
    if (!id || argv.includes('start') || argv.includes('delete')) continue;
    const joined = argv.join(' ');
    const runtime: ShimProcess['runtime'] = joined.includes('containerd-shim-runc-v2')
      ? 'runc'
      : joined.includes('containerd-shim-tsshim-v2') || argv.includes(tsshimMain)
        ? 'tsshim'
        : 'other';
    out.push({ pid, id, runtime });
  }
  return out;
}

function shimsFor(podId: string): ShimProcess[] {
  return shimProcesses().filter((s) => s.id === podId);
}

/** Kubelet log format: `<RFC3339Nano> <stream> <P|F> <text>`. */
const CRI_LOG_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$/;

function logLines(file: string): { time: string; stream: string; tag: string; text: string }[] {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = CRI_LOG_LINE.exec(line);
      assert.ok(m, `log line not in CRI format: ${JSON.stringify(line)}`);
      assert.ok(!Number.isNaN(Date.parse(m[1])), `bad timestamp in ${JSON.stringify(line)}`);
      return { time: m[1], stream: m[2], tag: m[3], text: m[4] };
    });
}

async function removePodQuietly(id: string): Promise<void> {
  try {
    await cri.stopPodSandbox(id);
  } catch {
    /* best effort */
  }
  try {
    await cri.removePodSandbox(id);
  } catch {
    /* best effort */
  }
}

function removeCgroupDirs(): void {
  for (const controller of fs.readdirSync('/sys/fs/cgroup')) {
    const top = path.join('/sys/fs/cgroup', controller, CGROUP_ROOT);
    if (!fs.existsSync(top)) continue;
    // Deepest first: a cgroup dir can only be removed once it has no children.
    const dirs: string[] = [];
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

// ---------------------------------------------------------------------------------------------
// one containerd (cri enabled, both runtime handlers) for the whole file

before(async () => {
  work = fs.mkdtempSync(path.join('/tmp', 'tss-cri-'));
  for (const d of ['cni/bin', 'cni/net.d', 'runc-root', 'pods', 'images'])
    fs.mkdirSync(path.join(work, d), { recursive: true });
  fs.writeFileSync(path.join(work, 'tsshim.toml'), renderCriFixture('tsshim.toml', work));
  containerd = await startContainerd({ cri: criPluginConfig(work), logLevel: 'debug', namespace: K8S_NAMESPACE });
  const busyboxTar = path.join(work, 'images', 'busybox.tar');
  const pauseTar = path.join(work, 'images', 'pause.tar');
  buildBusyboxImage(busyboxTar);
  buildPauseImage(pauseTar);
  await importImage(containerd, busyboxTar, BUSYBOX_IMAGE, { namespace: K8S_NAMESPACE });
  await importImage(containerd, pauseTar, PAUSE_IMAGE, { namespace: K8S_NAMESPACE });
  cri = new CriClient(containerd.address);
  await cri.waitForImage(BUSYBOX_IMAGE);
  await cri.waitForImage(PAUSE_IMAGE);
});

after(async () => {
  if (cri && containerd) {
    try {
      for (const p of await cri.listPodSandbox({ label_selector: { 'tsshim-e2e': 'true' } }))
        await removePodQuietly(p.id);
    } catch {
      /* containerd may be gone */
    }
    cri.close();
  }
  // CRI_E2E_LOG=1 prints containerd's log tail (the dir is removed on stop).
  if (process.env.CRI_E2E_LOG) process.stderr.write(logTail());
  if (containerd) await containerd.stop();
  removeCgroupDirs();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('CRI plugin basics', () => {
  it('Version and Status answer as the containerd under test, with CRI v1', async () => {
    const v = await cri.version();
    assert.equal(v.runtime_name, 'containerd');
    assert.equal(v.runtime_api_version, 'v1');
    assert.ok(v.runtime_version.replace(/^v/, '').startsWith(containerd!.release.version), v.runtime_version);
    const s = await cri.status();
    const ready = s.status?.conditions.find((c) => c.type === 'RuntimeReady');
    assert.equal(ready?.status, true, `RuntimeReady: ${JSON.stringify(s.status)}`);
  });

  it('ImageStatus and ListImages see the imported busybox and pause images', async () => {
    const busybox = await cri.imageStatus(BUSYBOX_IMAGE);
    assert.ok(busybox?.id.startsWith('sha256:'));
    assert.ok(busybox!.repo_tags.includes(BUSYBOX_IMAGE));
    assert.ok(busybox!.size > 0);
    const all = await cri.listImages();
    assert.ok(all.some((i) => i.repo_tags.includes(PAUSE_IMAGE)));
    assert.equal(await cri.imageStatus('docker.io/tsshim/absent:latest'), null);
  });
});

for (const handler of HANDLERS) {
  describe(`CRI flow with runtime handler "${handler}" (${RUNTIME_TYPE[handler]})`, () => {
    let pod: Pod | undefined;
    let main = ''; // ticker container: TERM trap, logs every second
    let sleeper = ''; // `sleep` as pid 1: ignores SIGTERM
    let podShimPid = 0;

    const needPod = (): Pod => {
      assert.ok(pod, 'no pod: RunPodSandbox failed earlier');
      return pod;
    };
    const needMain = (): string => {
      assert.ok(main, 'no container: CreateContainer/StartContainer failed earlier');
      return main;
    };

    after(async () => {
      if (pod) await removePodQuietly(pod.id);
    });

    it('RunPodSandbox (host network, own pid/ipc) and PodSandboxStatus', async () => {
      pod = await runPod(handler, `flow-${handler}`);
      const r = await cri.podSandboxStatus(pod.id, true);
      const s = r.status;
      assert.equal(s.id, pod.id);
      assert.equal(s.state, 'SANDBOX_READY');
      assert.equal(s.metadata?.name, `flow-${handler}`);
      assert.equal(s.metadata?.uid, pod.config.metadata.uid);
      assert.equal(s.runtime_handler, handler);
      assert.ok(s.created_at > 0);
      assert.equal(s.labels.handler, handler);
      assert.equal(s.annotations['tsshim.test/pod'], `flow-${handler}`);
      assert.deepEqual(
        {
          network: s.linux?.namespaces?.options?.network,
          pid: s.linux?.namespaces?.options?.pid,
          ipc: s.linux?.namespaces?.options?.ipc,
        },
        { network: 'NODE', pid: 'POD', ipc: 'POD' }
      );
      const info = JSON.parse(r.info.info ?? '{}');
      assert.equal(info.runtimeType, RUNTIME_TYPE[handler], 'the handler maps to its runtime type');
      assert.ok(info.pid > 0 && pidAlive(info.pid), `sandbox process ${info.pid} runs`);
      // Host network, own pid namespace.
      assert.equal(fs.readlinkSync(`/proc/${info.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'));
      assert.notEqual(fs.readlinkSync(`/proc/${info.pid}/ns/pid`), fs.readlinkSync('/proc/self/ns/pid'));
      // The cri plugin keeps its state under containerd's (temp) state dir.
      assert.ok(fs.existsSync(path.join(containerd!.state, 'io.containerd.grpc.v1.cri', 'sandboxes', pod.id)));
      // The runtime options reached the shim: runc state lives under the configured Root
      // (runc: options.Root; tsshim: Root from the ConfigPath file), per containerd namespace.
      assert.ok(
        fs.existsSync(path.join(work, 'runc-root', K8S_NAMESPACE, pod.id, 'state.json')),
        `no runc state under ${path.join(work, 'runc-root')}: the runtime options did not reach the shim`
      );
      const shims = shimsFor(pod.id);
      assert.equal(shims.length, 1, `one shim for the sandbox: ${JSON.stringify(shimProcesses())}`);
      assert.equal(shims[0].runtime, handler);
      podShimPid = shims[0].pid;
      assert.equal(ppidOf(info.pid), podShimPid, 'the sandbox process is a child of the shim');
    });

    it('CreateContainer, StartContainer and ContainerStatus (busybox, logging to log_path)', async () => {
      const p = needPod();
      const config = containerConfig(p, 'main', TICKER, { cpu_shares: 512, memory_limit_in_bytes: 64 * MiB });
      const id = await cri.createContainer(p.id, config, p.config);
      const created = await status(id);
      assert.equal(created.state, 'CONTAINER_CREATED');
      assert.ok(created.created_at > 0);
      assert.equal(created.started_at, 0);
      await cri.startContainer(id);
      main = id;
      const s = await status(id);
      assert.equal(s.state, 'CONTAINER_RUNNING', JSON.stringify(s));
      assert.ok(s.started_at >= s.created_at);
      assert.equal(s.finished_at, 0);
      assert.equal(s.metadata?.name, 'main');
      assert.equal(s.log_path, path.join(p.logDir, 'main', '0.log'));
      assert.equal(s.annotations['tsshim.test/container'], 'main');
      const listed = await cri.listContainers({ pod_sandbox_id: p.id });
      assert.deepEqual(
        listed.map((c) => [c.id, c.state]),
        [[id, 'CONTAINER_RUNNING']]
      );
      // Resources given at creation reach the container's cgroup.
      assert.equal(cgroupFile('memory', p, id, 'memory.limit_in_bytes'), String(64 * MiB));
      assert.equal(cgroupFile('cpu', p, id, 'cpu.shares'), '512');
    });

    it('the container log is in the kubelet CRI format and holds stdout and stderr', async () => {
      const p = needPod();
      needMain();
      const file = path.join(p.logDir, 'main', '0.log');
      const lines = await waitFor(
        'hello, oops and a tick in the container log',
        () => {
          const l = logLines(file);
          return l.some((x) => x.text === 'tick') ? l : undefined;
        },
        10_000
      );
      assert.ok(
        lines.some((x) => x.stream === 'stdout' && x.tag === 'F' && x.text === 'hello'),
        JSON.stringify(lines)
      );
      assert.ok(
        lines.some((x) => x.stream === 'stderr' && x.tag === 'F' && x.text === 'oops'),
        JSON.stringify(lines)
      );
    });

    it('ExecSync returns stdout, stderr and the exit code; a timed-out exec fails and the container keeps running', async () => {
      const id = needMain();
      const r = await cri.execSync(id, ['sh', '-c', 'echo out; echo err >&2; exit 3'], 10);
      assert.equal(r.stdout.toString(), 'out\n');
      assert.equal(r.stderr.toString(), 'err\n');
      assert.equal(r.exit_code, 3);
      const ok = await cri.execSync(id, ['cat', '/proc/1/cmdline'], 10);
      assert.equal(ok.exit_code, 0);
      assert.equal(ok.stdout.toString().split('\0')[0], 'sh', 'exec runs in the container pid namespace');
      const t0 = Date.now();
      await assert.rejects(cri.execSync(id, ['sleep', '30'], 1), (e: unknown) => e instanceof CriError);
      assert.ok(Date.now() - t0 < 10_000, `timed-out exec returned after ${Date.now() - t0} ms`);
      assert.equal((await status(id)).state, 'CONTAINER_RUNNING');
      // The runtime kills the timed-out exec process: nothing is left running `sleep 30`.
      await waitFor(
        'the timed-out exec process to be gone',
        async () => {
          const ps = (await cri.execSync(id, ['ps', '-o', 'pid,args'], 10)).stdout.toString();
          assert.match(ps, /while :/, 'ps lists the container processes'); // proves ps sees the container
          return !/sleep 30/.test(ps);
        },
        10_000
      );
    });

    it('ContainerStats and ListContainerStats report cpu and memory', async () => {
      const id = needMain();
      const st = await cri.containerStats(id);
      assert.equal(st.attributes?.id, id);
      assert.equal(st.attributes?.metadata?.name, 'main');
      assert.ok((st.cpu?.timestamp ?? 0) > 0, `cpu: ${JSON.stringify(st.cpu)}`);
      assert.ok((st.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, `cpu usage: ${JSON.stringify(st.cpu)}`);
      assert.ok((st.memory?.timestamp ?? 0) > 0, `memory: ${JSON.stringify(st.memory)}`);
      assert.ok((st.memory?.working_set_bytes?.value ?? 0) > 0, `working set: ${JSON.stringify(st.memory)}`);
      assert.ok((st.memory?.usage_bytes?.value ?? 0) > 0, `usage: ${JSON.stringify(st.memory)}`);
      const all = await cri.listContainerStats({ pod_sandbox_id: needPod().id });
      const mine = all.find((s) => s.attributes?.id === id);
      assert.ok(mine, `ListContainerStats lists ${id}: ${JSON.stringify(all.map((s) => s.attributes?.id))}`);
      assert.ok((mine.cpu?.usage_core_nano_seconds?.value ?? 0) > 0);
      assert.ok((mine.memory?.working_set_bytes?.value ?? 0) > 0);
    });

    it('UpdateContainerResources changes the cgroup (cpu shares, CFS quota, memory limit)', async () => {
      const p = needPod();
      const id = needMain();
      await cri.updateContainerResources(id, {
        cpu_shares: 256,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        memory_limit_in_bytes: 96 * MiB,
      });
      assert.equal(cgroupFile('cpu', p, id, 'cpu.shares'), '256');
      assert.equal(cgroupFile('cpu', p, id, 'cpu.cfs_period_us'), '100000');
      assert.equal(cgroupFile('cpu', p, id, 'cpu.cfs_quota_us'), '50000');
      assert.equal(cgroupFile('memory', p, id, 'memory.limit_in_bytes'), String(96 * MiB));
      assert.equal((await status(id)).state, 'CONTAINER_RUNNING');
    });

    it('ReopenContainerLog after rotation writes new output to a fresh log file', async () => {
      const p = needPod();
      const id = needMain();
      const file = path.join(p.logDir, 'main', '0.log');
      fs.renameSync(file, `${file}.1`);
      await cri.reopenContainerLog(id);
      await waitFor('a tick in the reopened log', () => logLines(file).some((x) => x.text === 'tick'), 10_000);
      assert.ok(!logLines(file).some((x) => x.text === 'hello'), 'old output stays in the rotated file');
      assert.ok(logLines(`${file}.1`).some((x) => x.text === 'hello'));
    });

    it('all containers of the pod share one shim process', async () => {
      const p = needPod();
      needMain();
      sleeper = await createAndStart(p, containerConfig(p, 'sleeper', ['sleep', '2147483647']));
      assert.equal((await status(sleeper)).state, 'CONTAINER_RUNNING');
      const shims = shimsFor(p.id);
      assert.equal(shims.length, 1, `one shim for pod ${p.id}: ${JSON.stringify(shimProcesses())}`);
      assert.equal(shims[0].pid, podShimPid, 'the sandbox shim serves the containers too');
      // Containers have no shim of their own (grouped under the sandbox id).
      const byContainer = shimProcesses().filter((s) => s.id === main || s.id === sleeper);
      assert.deepEqual(byContainer, []);
      for (const id of [main, sleeper]) {
        assert.equal(
          ppidOf(await containerPid(id)),
          podShimPid,
          `container ${id.slice(0, 12)} is a child of the pod's shim`
        );
      }
    });

    it('StopContainer: a TERM trap ends the container with exit code 0 before the timeout', async () => {
      const id = needMain();
      const t0 = Date.now();
      await cri.stopContainer(id, 10);
      const took = Date.now() - t0;
      const s = await waitExited(id);
      assert.ok(took < 8_000, `graceful stop took ${took} ms`);
      assert.equal(s.exit_code, 0, JSON.stringify(s));
      assert.equal(s.reason, 'Completed');
      assert.ok(s.finished_at >= s.started_at && s.finished_at > 0);
      const file = path.join(needPod().logDir, 'main', '0.log');
      assert.ok(
        logLines(file).some((x) => x.text === 'bye'),
        'the trap output reached the log'
      );
      await cri.stopContainer(id, 10); // the kubelet may stop twice: idempotent
      assert.equal((await status(id)).exit_code, 0);
    });

    it('StopContainer: sleep as pid 1 ignores SIGTERM and is SIGKILLed after the timeout (exit 137)', async () => {
      assert.ok(sleeper, 'no sleeper container');
      const t0 = Date.now();
      await cri.stopContainer(sleeper, 2);
      const took = Date.now() - t0;
      const s = await waitExited(sleeper);
      assert.ok(took >= 1_900, `StopContainer returned after ${took} ms, before the 2 s grace period`);
      assert.ok(took < 12_000, `StopContainer took ${took} ms`);
      assert.equal(s.exit_code, 137, JSON.stringify(s));
      assert.equal(s.reason, 'Error');
    });

    it('RemoveContainer removes exited containers', async () => {
      const p = needPod();
      for (const id of [main, sleeper].filter(Boolean)) {
        await cri.removeContainer(id);
        await assert.rejects(
          cri.containerStatus(id),
          (e: unknown) => e instanceof CriError && e.code === grpc.status.NOT_FOUND
        );
      }
      assert.deepEqual(await cri.listContainers({ pod_sandbox_id: p.id }), []);
      assert.equal(shimsFor(p.id).length, 1, 'the shim stays while the sandbox runs');
    });

    it('a container that exits by itself reports its exit code and reason Error', async () => {
      const p = needPod();
      const id = await createAndStart(p, containerConfig(p, 'quitter', ['sh', '-c', 'echo done; exit 7']));
      const s = await waitExited(id);
      assert.equal(s.exit_code, 7, JSON.stringify(s));
      assert.equal(s.reason, 'Error');
      // Not finished_at >= started_at: the cri plugin stamps started_at after Start returns, and a
      // fast exit's exited_at (from the shim) can be earlier.
      assert.ok(s.started_at > 0 && s.finished_at > 0, JSON.stringify(s));
      assert.ok(logLines(path.join(p.logDir, 'quitter', '0.log')).some((x) => x.text === 'done'));
      await cri.removeContainer(id);
    });

    it('a container allocating past its memory limit is OOMKilled', async () => {
      const p = needPod();
      // dd's 128 MiB buffer is filled by read(2) from /dev/zero: far past the 24 MiB limit.
      const id = await createAndStart(
        p,
        containerConfig(p, 'oom', ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=128M', 'count=4'], {
          memory_limit_in_bytes: 24 * MiB,
        })
      );
      const s = await waitFor(
        'OOMKilled reason',
        async () => {
          const st = await status(id);
          return st.state === 'CONTAINER_EXITED' && st.reason !== '' ? st : undefined;
        },
        20_000
      );
      assert.equal(s.reason, 'OOMKilled', JSON.stringify(s));
      assert.equal(s.exit_code, 137);
      await cri.removeContainer(id);
    });

    it('StopPodSandbox, RemovePodSandbox; the pod shim exits', async () => {
      const p = needPod();
      assert.ok(podShimPid > 0 && pidAlive(podShimPid), 'pod shim alive before removal');
      await cri.stopPodSandbox(p.id);
      const s = await cri.podSandboxStatus(p.id);
      assert.equal(s.status.state, 'SANDBOX_NOTREADY');
      await cri.removePodSandbox(p.id);
      await assert.rejects(
        cri.podSandboxStatus(p.id),
        (e: unknown) => e instanceof CriError && e.code === grpc.status.NOT_FOUND
      );
      pod = undefined;
      await waitFor(`shim ${podShimPid} to exit`, () => shimLeft(podShimPid), 10_000);
      assert.deepEqual(shimsFor(p.id), []);
      assert.ok(!(await cri.listPodSandbox({ id: p.id })).length);
    });

    it('containerd killed and restarted: the running pod and container keep running and report status', async () => {
      const c = containerd!;
      pod = await runPod(handler, `restart-${handler}`);
      const p = pod;
      const id = await createAndStart(p, containerConfig(p, 'survivor', TICKER));
      const pid = await containerPid(id);
      const shims = shimsFor(p.id);
      assert.equal(shims.length, 1);
      const shimPid = shims[0].pid;

      await c.kill9();
      assert.ok(pidAlive(shimPid) && pidAlive(pid), 'shim and container outlive containerd');
      await c.restart();
      cri.close();
      cri = new CriClient(c.address);

      const sb = await waitFor(
        'PodSandboxStatus after restart',
        async () => (await cri.podSandboxStatus(p.id)).status,
        20_000
      );
      assert.equal(sb.state, 'SANDBOX_READY');
      const s = await status(id);
      assert.equal(s.state, 'CONTAINER_RUNNING', JSON.stringify(s));
      assert.equal(await containerPid(id), pid, 'same container process');
      assert.ok(pidAlive(shimPid), 'same shim process');
      assert.deepEqual(
        shimsFor(p.id).map((x) => x.pid),
        [shimPid]
      );
      const r = await cri.execSync(id, ['echo', 'after-restart'], 10);
      assert.equal(r.stdout.toString(), 'after-restart\n');
      assert.equal(r.exit_code, 0);
      // The re-attached logger keeps writing: a tick stamped after the restart.
      const restartedAt = Date.now();
      const file = path.join(p.logDir, 'survivor', '0.log');
      await waitFor(
        'log output after restart',
        () => logLines(file).some((x) => x.text === 'tick' && Date.parse(x.time) > restartedAt),
        10_000
      );
      const st = await cri.containerStats(id);
      assert.ok((st.memory?.working_set_bytes?.value ?? 0) > 0, 'stats through the reconnected shim');

      // The exit after a restart still reaches the cri plugin through the reconnected shim.
      await cri.stopContainer(id, 10);
      const exited = await waitExited(id);
      assert.equal(exited.exit_code, 0, JSON.stringify(exited));
      assert.equal(exited.reason, 'Completed');
      await cri.removeContainer(id);
      await cri.stopPodSandbox(p.id);
      await cri.removePodSandbox(p.id);
      pod = undefined;
      await waitFor(`shim ${shimPid} to exit`, () => shimLeft(shimPid), 10_000);
    });
  });
}
