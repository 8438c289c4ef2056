// A small Kubernetes CRI (runtime.v1) client for e2e tests, from our own test/proto/cri/api.proto:
// RuntimeService and ImageService unary calls as promises, each with a deadline, errors carrying
// the gRPC code and the method name. Field names are the proto names (keepCase), int64 as number.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { repoRoot } from './harness';

const DEFAULT_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// The message shapes the tests use (a subset of the proto; all fields optional on requests).

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
  target_id?: string;
}
export interface LinuxContainerResources {
  cpu_period?: number;
  cpu_quota?: number;
  cpu_shares?: number;
  memory_limit_in_bytes?: number;
  oom_score_adj?: number;
  cpuset_cpus?: string;
  cpuset_mems?: string;
  unified?: Record<string, string>;
}
export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  log_directory?: string;
  dns_config?: { servers?: string[]; searches?: string[]; options?: string[] };
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    security_context?: { namespace_options?: NamespaceOption; privileged?: boolean; readonly_rootfs?: boolean };
    sysctls?: Record<string, string>;
  };
}
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  log_path?: string;
  stdin?: boolean;
  stdin_once?: boolean;
  tty?: boolean;
  linux?: {
    resources?: LinuxContainerResources;
    security_context?: { namespace_options?: NamespaceOption; privileged?: boolean; readonly_rootfs?: boolean };
  };
}

export interface VersionResponse {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}
export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}
export interface StatusResponse {
  status: { conditions: RuntimeCondition[] } | null;
  info: Record<string, string>;
}
export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  created_at: number;
  network: { ip: string; additional_ips: { ip: string }[] } | null;
  linux: { namespaces: { options: Required<NamespaceOption> | null } | null } | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}
export interface PodSandboxStatusResponse {
  status: PodSandboxStatus;
  info: Record<string, string>;
}
export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  created_at: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}
export interface ContainerStatus {
  id: string;
  metadata: { name: string; attempt: number } | null;
  state: ContainerState;
  created_at: number;
  started_at: number;
  finished_at: number;
  exit_code: number;
  image: { image: string } | null;
  image_ref: string;
  reason: string;
  message: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  log_path: string;
}
export interface ContainerStatusResponse {
  status: ContainerStatus;
  info: Record<string, string>;
}
export interface Container {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number } | null;
  image_ref: string;
  state: ContainerState;
  created_at: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exit_code: number;
}
interface U64 {
  value: number;
}
export interface ContainerStats {
  attributes: { id: string; metadata: { name: string; attempt: number } | null; labels: Record<string, string> } | null;
  cpu: { timestamp: number; usage_core_nano_seconds: U64 | null; usage_nano_cores: U64 | null } | null;
  memory: {
    timestamp: number;
    working_set_bytes: U64 | null;
    available_bytes: U64 | null;
    usage_bytes: U64 | null;
    rss_bytes: U64 | null;
    page_faults: U64 | null;
    major_page_faults: U64 | null;
  } | null;
  writable_layer: {
    timestamp: number;
    fs_id: { mountpoint: string } | null;
    used_bytes: U64 | null;
    inodes_used: U64 | null;
  } | null;
}
export interface Image {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: number;
}

/** A failed CRI call: `code` is the gRPC status code, the message names the method. */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string
  ) {
    super(`CRI ${method} failed: ${grpc.status[code] ?? code}: ${details}`);
    this.name = 'CriError';
  }
}

// ---------------------------------------------------------------------------------------------

let loaded: any;
function criPackage(): any {
  if (!loaded) {
    const def = protoLoader.loadSync('cri/api.proto', {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [path.join(repoRoot(), 'test', 'proto')],
    });
    loaded = grpc.loadPackageDefinition(def).runtime;
  }
  return loaded.v1;
}

type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: any) => void
) => void;

export class CriClient {
  private readonly runtime: grpc.Client & Record<string, Unary>;
  private readonly images: grpc.Client & Record<string, Unary>;

  /** `address` is containerd's gRPC socket path (the CRI services share it). */
  constructor(
    readonly address: string,
    private readonly defaultTimeoutMs = DEFAULT_TIMEOUT_MS
  ) {
    const pkg = criPackage();
    const target = `unix://${address}`;
    const creds = grpc.credentials.createInsecure();
    // 16 MiB replies: ExecSync output is capped there by the runtime.
    const options = { 'grpc.max_receive_message_length': 32 << 20 };
    this.runtime = new pkg.RuntimeService(target, creds, options);
    this.images = new pkg.ImageService(target, creds, options);
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }

  private call<T>(
    client: grpc.Client & Record<string, Unary>,
    method: string,
    req: unknown,
    timeoutMs?: number
  ): Promise<T> {
    const deadline = new Date(Date.now() + (timeoutMs ?? this.defaultTimeoutMs));
    return new Promise<T>((resolve, reject) => {
      client[method].call(client, req, new grpc.Metadata(), { deadline }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res as T);
      });
    });
  }

  private rt<T>(method: string, req: unknown, timeoutMs?: number): Promise<T> {
    return this.call<T>(this.runtime, method, req, timeoutMs);
  }

  // RuntimeService ------------------------------------------------------------------------------

  version(): Promise<VersionResponse> {
    return this.rt('Version', { version: 'v1' });
  }

  status(verbose = false): Promise<StatusResponse> {
    return this.rt('Status', { verbose });
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = '', timeoutMs = 60_000): Promise<string> {
    const r = await this.rt<{ pod_sandbox_id: string }>(
      'RunPodSandbox',
      { config, runtime_handler: runtimeHandler },
      timeoutMs
    );
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(podSandboxId: string, timeoutMs = 60_000): Promise<void> {
    await this.rt('StopPodSandbox', { pod_sandbox_id: podSandboxId }, timeoutMs);
  }

  async removePodSandbox(podSandboxId: string, timeoutMs = 60_000): Promise<void> {
    await this.rt('RemovePodSandbox', { pod_sandbox_id: podSandboxId }, timeoutMs);
  }

  podSandboxStatus(podSandboxId: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.rt('PodSandboxStatus', { pod_sandbox_id: podSandboxId, verbose });
  }

  async listPodSandbox(filter: { id?: string; label_selector?: Record<string, string> } = {}): Promise<PodSandbox[]> {
    const r = await this.rt<{ items: PodSandbox[] }>('ListPodSandbox', { filter });
    return r.items;
  }

  async createContainer(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig
  ): Promise<string> {
    const r = await this.rt<{ container_id: string }>(
      'CreateContainer',
      { pod_sandbox_id: podSandboxId, config, sandbox_config: sandboxConfig },
      60_000
    );
    return r.container_id;
  }

  async startContainer(containerId: string): Promise<void> {
    await this.rt('StartContainer', { container_id: containerId }, 60_000);
  }

  /** `timeoutSeconds`: grace period after the stop signal before SIGKILL. */
  async stopContainer(containerId: string, timeoutSeconds: number): Promise<void> {
    await this.rt(
      'StopContainer',
      { container_id: containerId, timeout: timeoutSeconds },
      timeoutSeconds * 1000 + 30_000
    );
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.rt('RemoveContainer', { container_id: containerId }, 60_000);
  }

  async listContainers(
    filter: { id?: string; pod_sandbox_id?: string; state?: { state: ContainerState } } = {}
  ): Promise<Container[]> {
    const r = await this.rt<{ containers: Container[] }>('ListContainers', { filter });
    return r.containers;
  }

  containerStatus(containerId: string, verbose = false): Promise<ContainerStatusResponse> {
    return this.rt('ContainerStatus', { container_id: containerId, verbose });
  }

  async updateContainerResources(containerId: string, linux: LinuxContainerResources): Promise<void> {
    await this.rt('UpdateContainerResources', { container_id: containerId, linux });
  }

  async reopenContainerLog(containerId: string): Promise<void> {
    await this.rt('ReopenContainerLog', { container_id: containerId });
  }

  /** `timeoutSeconds` 0 = none; the call's own deadline is that plus a margin. */
  execSync(containerId: string, cmd: string[], timeoutSeconds = 0): Promise<ExecSyncResponse> {
    const deadlineMs = timeoutSeconds > 0 ? timeoutSeconds * 1000 + 15_000 : this.defaultTimeoutMs;
    return this.rt('ExecSync', { container_id: containerId, cmd, timeout: timeoutSeconds }, deadlineMs);
  }

  async containerStats(containerId: string): Promise<ContainerStats> {
    const r = await this.rt<{ stats: ContainerStats }>('ContainerStats', { container_id: containerId });
    return r.stats;
  }

  async listContainerStats(filter: { id?: string; pod_sandbox_id?: string } = {}): Promise<ContainerStats[]> {
    const r = await this.rt<{ stats: ContainerStats[] }>('ListContainerStats', { filter });
    return r.stats;
  }

  // ImageService --------------------------------------------------------------------------------

  /** The image as the CRI plugin sees it, or null when it does not know the name. */
  async imageStatus(image: string): Promise<Image | null> {
    const r = await this.call<{ image: Image | null }>(this.images, 'ImageStatus', { image: { image } });
    return r.image && r.image.id ? r.image : null;
  }

  async listImages(): Promise<Image[]> {
    const r = await this.call<{ images: Image[] }>(this.images, 'ListImages', { filter: {} });
    return r.images;
  }

  /** Images imported with `ctr -n k8s.io images import` reach the CRI plugin's cache a little later. */
  async waitForImage(image: string, timeoutMs = 30_000): Promise<Image> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await this.imageStatus(image);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`CRI does not see image ${image} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
