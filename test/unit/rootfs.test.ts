// Rootfs mounting: option words -> mount(2) arguments, and real mounts (root only) through the
// syscall path and the mount(8) fallback, undone by unmountAll.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mountRootfs, unmountAll } from '../../src/task/rootfs';
import { mountsBelow } from '../../src/task/mounts';
import { MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, mountCall } from '../../src/task/mount-options';

test('mount options: flags set and cleared, propagation apart, the rest is data', () => {
  const c = mountCall('overlay', ['index=off', 'workdir=/w', 'upperdir=/u', 'lowerdir=/l1:/l2', 'nosuid', 'ro', 'rw']);
  assert.deepEqual(c, {
    flags: MS_NOSUID,
    data: 'index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2',
    propagation: 0,
    bindRemount: false,
  });
  const b = mountCall('none', ['rbind', 'ro', 'nodev', 'rprivate']);
  assert.equal(b!.flags, MS_BIND | MS_REC | MS_RDONLY | MS_NODEV);
  assert.equal(b!.propagation, MS_PRIVATE | MS_REC);
  assert.equal(b!.bindRemount, true, 'a read-only bind needs a remount');
  assert.equal(mountCall('bind', ['bind'])!.bindRemount, false);
  assert.equal(mountCall('tmpfs', [])!.data, '');
});

test('mount options: loop, x- options, FUSE helpers and over-long data go to mount(8)', () => {
  assert.equal(mountCall('ext4', ['loop']), null);
  assert.equal(mountCall('none', ['bind', 'x-systemd.automount']), null);
  assert.equal(mountCall('fuse.sshfs', []), null);
  assert.equal(mountCall('overlay', [`lowerdir=${'/l'.repeat(2000)}`]), null);
});

const asRoot = process.getuid?.() === 0 ? false : 'needs root';

function bundleDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-rootfs-'));
}

test(
  'mountRootfs: overlay through mount(2), read-only bind with remount, undone by unmountAll',
  { skip: asRoot },
  async () => {
    const dir = bundleDir();
    try {
      const [lower, upper, work, src] = ['lower', 'upper', 'work', 'src'].map((d) => path.join(dir, d));
      for (const d of [lower, upper, work, src]) fs.mkdirSync(d);
      fs.writeFileSync(path.join(lower, 'from-lower'), 'x');
      fs.mkdirSync(path.join(lower, 'mnt')); // the bind target, inside the overlay
      fs.writeFileSync(path.join(src, 'data'), 'y');
      const bundle = path.join(dir, 'bundle');
      fs.mkdirSync(bundle);
      await mountRootfs(bundle, [
        { type: 'overlay', source: 'overlay', options: [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`] },
        { type: 'none', source: src, target: '/mnt', options: ['rbind', 'ro'] },
      ]);
      const rootfs = path.join(bundle, 'rootfs');
      assert.equal(fs.readFileSync(path.join(rootfs, 'from-lower'), 'utf8'), 'x');
      fs.writeFileSync(path.join(rootfs, 'new'), 'z');
      assert.ok(fs.existsSync(path.join(upper, 'new')), 'writes land in the upper dir');
      assert.equal(fs.readFileSync(path.join(rootfs, 'mnt', 'data'), 'utf8'), 'y');
      assert.throws(() => fs.writeFileSync(path.join(rootfs, 'mnt', 'w'), 'no'), /EROFS/);
      assert.equal(mountsBelow(rootfs).length, 2);
      assert.deepEqual(await unmountAll(rootfs), []);
      assert.equal(mountsBelow(rootfs).length, 0);
    } finally {
      await unmountAll(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
);

test(
  'mountRootfs: mount(8) fallback for an x- option; a bad mount fails clearly and leaves nothing',
  { skip: asRoot },
  async () => {
    const dir = bundleDir();
    try {
      const bundle = path.join(dir, 'bundle');
      fs.mkdirSync(bundle);
      await mountRootfs(bundle, [{ type: 'tmpfs', source: 'tmpfs', options: ['size=1m', 'x-tsshim.test'] }]);
      assert.equal(mountsBelow(path.join(bundle, 'rootfs')).length, 1);
      assert.deepEqual(await unmountAll(path.join(bundle, 'rootfs')), []);
      await assert.rejects(
        mountRootfs(bundle, [
          { type: 'tmpfs', source: 'tmpfs', options: [] },
          { type: 'none', source: path.join(dir, 'missing'), target: '/x', options: ['bind'] },
        ]),
        /failed to mount rootfs component .*ENOENT/
      );
      assert.equal(mountsBelow(path.join(bundle, 'rootfs')).length, 0, 'the first mount was rolled back');
    } finally {
      await unmountAll(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
);
