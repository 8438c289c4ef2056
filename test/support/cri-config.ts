// The cri plugin fixtures of test/fixtures/cri, rendered for the containerd release under test:
// 1.6 takes cri-plugin.toml; 2.x its own layout (cri-plugin-v3.toml: runtime, images and gRPC
// plugins, podsandbox), with CNI's bin dir as bin_dir on 2.0 and bin_dirs from 2.1 on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './harness';
import { selectedRelease } from './containerd-release';
import { PAUSE_IMAGE } from './rootfs';

/** A fixture of test/fixtures/cri with {{WORK}}, {{SANDBOX_IMAGE}} and {{CNI_BIN}} filled in. */
export function renderCriFixture(name: string, work: string): string {
  const release = selectedRelease(repoRoot());
  const cniBin =
    release.major === 2 && release.minor === 0 ? `bin_dir = "${work}/cni/bin"` : `bin_dirs = ["${work}/cni/bin"]`;
  return fs
    .readFileSync(path.join(repoRoot(), 'test', 'fixtures', 'cri', name), 'utf8')
    .replaceAll('{{CNI_BIN}}', cniBin)
    .replaceAll('{{WORK}}', work)
    .replaceAll('{{SANDBOX_IMAGE}}', PAUSE_IMAGE);
}

/** The cri plugin section for the release under test. */
export function criPluginConfig(work: string): string {
  return renderCriFixture(selectedRelease(repoRoot()).major >= 2 ? 'cri-plugin-v3.toml' : 'cri-plugin.toml', work);
}
