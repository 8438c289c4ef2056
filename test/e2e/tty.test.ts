// Terminal mode end to end: ctr runs inside a real pseudo-terminal (node-pty), so everything a
// user's terminal does reaches the shim: keystrokes through the stdin FIFO to the pty master,
// output back, SIGWINCH forwarded by ctr as ResizePty, and the exit code of the shell.
// The same session runs against io.containerd.runc.v2 so a difference shows up as a failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startContainerd, uniqueId, RUNC_RUNTIME, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { getTask } from '../support/containerd-api';
import { runDetached } from '../support/containers';
import { PtySession, PROMPT, initialSize, resizeUntilSeen } from '../support/pty';

let c: Containerd;
let rootfs: string;

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
});
after(() => c?.stop());

/** Types the scenario of the issue into an interactive shell and checks every answer. */
async function interactiveSession(s: PtySession): Promise<void> {
  try {
    await s.expect(PROMPT);
    assert.equal(await initialSize(s), '24 80', 'rows and columns of the terminal ctr runs in');
    const { size, want } = await resizeUntilSeen(s, 45, 123);
    assert.equal(size, want, 'rows and columns after pty.resize()');
    // `h""i` is echoed as typed, so only the command's own output can match `hi` on its own line.
    s.type('echo h""i; exit 3\r');
    await s.expect(/\nhi\r*\n/);
    assert.equal(await s.exitCode(), 3, s.output);
  } finally {
    s.kill();
  }
}

for (const runtime of [RUNC_RUNTIME, TSSHIM_RUNTIME]) {
  test(`ctr run -t (${runtime}): typed commands, stty size after resize, exit code 3`, async () => {
    const id = uniqueId('tty');
    const s = new PtySession(c, [
      'run',
      '-t',
      '--rm',
      '--runtime',
      runtime,
      ...PATH_ENV_ARGS,
      '--rootfs',
      rootfs,
      id,
      'sh',
    ]);
    await interactiveSession(s);
    // --rm: the container is gone once ctr returned.
    const ls = await c.ctr(['container', 'ls', '-q']);
    assert.ok(!ls.stdout.split('\n').includes(id), ls.stdout);
  });

  test(`ctr task exec -t (${runtime}) into a detached container`, async () => {
    const id = uniqueId('ttyexec');
    await runDetached(c, id, ['sleep', '1000'], { runtime, rootfs, extra: PATH_ENV_ARGS });
    try {
      const s = new PtySession(c, ['task', 'exec', '-t', '--exec-id', 'tty1', id, 'sh']);
      await interactiveSession(s);
      // The container itself keeps running after the exec's exit.
      assert.equal((await getTask(c, id)).status, 'RUNNING');
    } finally {
      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
      for (let i = 0; i < 100 && (await getTask(c, id)).status !== 'STOPPED'; i++)
        await new Promise((res) => setTimeout(res, 50));
      await c.ctr(['task', 'delete', id]);
      await c.ctr(['container', 'delete', id]);
    }
  });
}

test('ctr run -t with tsshim: output written right before exit reaches the terminal', async () => {
  const id = uniqueId('ttyburst');
  const s = new PtySession(c, [
    'run',
    '-t',
    '--rm',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--rootfs',
    rootfs,
    id,
    'sh',
    '-c',
    'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo the-end; exit 5',
  ]);
  try {
    await s.expect(/the-end\r*\n/, 20_000);
    assert.equal(await s.exitCode(), 5);
    const lines = s.output.split(/\r*\n/).filter((l) => l.startsWith('line-'));
    assert.equal(lines.length, 2000);
    assert.equal(lines[1999], 'line-1999');
  } finally {
    s.kill();
  }
});
