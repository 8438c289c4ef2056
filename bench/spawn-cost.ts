// What forking the Node process costs per runc call (issue 17), against a vfork-style spawn.
//   node dist/bench/spawn-cost.js [iterations=300]          in-process: fork (child_process) vs posix_spawn
//   node dist/bench/spawn-cost.js --shim [execs=60]          a real shim of each runtime per `ctr task exec`
// In-process: a Node process holding ~20 MiB of live objects allocates ~1 MiB of young objects
// between spawns of /bin/true (as an RPC does), and reports per spawn the parent's minor faults
// (/proc/self/stat: copy-on-write faults after fork) and CPU (process.cpuUsage), and the reaped
// children's CPU (cutime+cstime, 10 ms ticks: many spawns). posix_spawn (glibc: clone(CLONE_VM |
// CLONE_VFORK)) is called through koffi directly here, a measurement only: src/ keeps koffi in
// src/sys/libc.ts. --shim: forks (strace of clone without CLONE_THREAD), minor faults and CPU of the
// shim daemon per exec, tsshim and runc.v2 in one private containerd.
import * as fs from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';

const procStat = (pid: number | 'self' = 'self') => {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return {
    minflt: Number(f[7]),
    cpuMs: (Number(f[11]) + Number(f[12])) * 10,
    childCpuMs: (Number(f[13]) + Number(f[14])) * 10,
  };
};
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function inProcess(n: number): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- measurement only, see the header
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  const posixSpawn = c.func(
    'int posix_spawn(_Out_ int *pid, const char *path, void *fa, void *attr, const char **argv, const char **envp)'
  );
  const waitpid = c.func('int waitpid(int pid, _Out_ int *status, int options)');
  const keep: { a: string; i: number }[] = [];
  for (let i = 0; i < 20 * 1024; i++) keep.push({ a: 'x'.repeat(900), i });
  let sink: unknown;
  const work = () => {
    const a = [];
    for (let i = 0; i < 20000; i++) a.push({ i, s: `k${i}` });
    sink = a;
  };
  const env = [...Object.entries(process.env).map(([k, v]) => `${k}=${v}`), null];
  const ways: [string, () => Promise<unknown>][] = [
    ['no spawn (allocation only)', () => new Promise(setImmediate)],
    [
      'child_process.spawn (fork)',
      () => new Promise((res) => spawn('/bin/true', [], { stdio: 'ignore' }).on('exit', res)),
    ],
    [
      'posix_spawn (vfork)',
      () => {
        const pid = [0];
        if (posixSpawn(pid, '/bin/true', null, null, ['/bin/true', null], env) !== 0)
          throw new Error('posix_spawn failed');
        waitpid(pid[0], [0], 0);
        return Promise.resolve();
      },
    ],
  ];
  console.log(
    `Node ${process.version}, ${n} iterations each, ~1 MiB allocated per iteration, RSS ${(process.memoryUsage().rss / 1048576).toFixed(0)} MiB`
  );
  for (const [name, one] of ways) {
    for (let i = 0; i < 20; i++) {
      await one();
      work();
    }
    const s0 = procStat();
    const c0 = cpuMs();
    for (let i = 0; i < n; i++) {
      await one();
      work();
    }
    const s1 = procStat();
    const c1 = cpuMs();
    console.log(
      `${name.padEnd(28)} minor faults ${((s1.minflt - s0.minflt) / n).toFixed(1).padStart(6)}  parent CPU ${((c1 - c0) / n).toFixed(3)} ms` +
        `  children CPU ${((s1.childCpuMs - s0.childCpuMs) / n).toFixed(2)} ms (per iteration)`
    );
  }
  void sink;
}

async function realShims(execs: number): Promise<void> {
  const { startContainerd, TSSHIM_RUNTIME, RUNC_RUNTIME } = await import('../test/support/harness');
  const { makeRootfs, PATH_ENV_ARGS } = await import('../test/support/rootfs');
  const c = await startContainerd({ logLevel: 'info' });
  try {
    const rootfs = makeRootfs(c.dir);
    for (const rt of [TSSHIM_RUNTIME, RUNC_RUNTIME]) {
      const id = `spawncost-${rt === TSSHIM_RUNTIME ? 'tsshim' : 'runc'}`;
      const before = new Set(c.shimPids());
      const r = await c.ctr(['run', '-d', '--runtime', rt, ...PATH_ENV_ARGS, '--rootfs', rootfs, id, 'sleep', '1000']);
      if (r.code !== 0) throw new Error(r.stderr);
      const pid = c
        .shimPids()
        .find(
          (p) =>
            !before.has(p) &&
            fs.readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(rt === TSSHIM_RUNTIME ? 'tsshim' : 'runc-v2')
        );
      if (!pid) throw new Error(`no shim found for ${id}`);
      let seq = 0;
      const exec = async () => {
        const e = await c.ctr(['task', 'exec', '--exec-id', `x${seq++}`, id, '/bin/true']);
        if (e.code !== 0) throw new Error(e.stderr);
      };
      for (let i = 0; i < 10; i++) await exec();
      const s0 = procStat(pid);
      for (let i = 0; i < execs; i++) await exec();
      const s1 = procStat(pid);
      const trace = `${c.dir}/clone-${id}.txt`;
      const st = spawnSync(
        'sh',
        [
          '-c',
          `strace -f -qq -e trace=clone,clone3,vfork,fork -p ${pid} -o ${trace} & sp=$!; sleep 1; ` +
            `for i in $(seq 1 20); do ctr --address ${c.address} -n ${c.namespace} task exec --exec-id s$i ${id} /bin/true; done; kill $sp; wait $sp`,
        ],
        { encoding: 'utf8' }
      );
      // Only the shim's own threads: strace -f follows runc and its children too.
      const tids = new Set(fs.readdirSync(`/proc/${pid}/task`));
      const lines = fs.existsSync(trace) ? fs.readFileSync(trace, 'utf8').split('\n') : [];
      const own = lines.filter(
        (l) => tids.has(l.split(' ')[0]) && /\b(clone3?|vfork|fork)\(/.test(l) && !/CLONE_THREAD/.test(l)
      );
      const forks = own.length;
      const vforks = own.filter((l) => /CLONE_VFORK|vfork\(/.test(l)).length;
      console.log(
        `${rt.padEnd(24)} per exec: minor faults ${((s1.minflt - s0.minflt) / execs).toFixed(0)}, shim CPU ${((s1.cpuMs - s0.cpuMs) / execs).toFixed(1)} ms, ` +
          `reaped children CPU ${((s1.childCpuMs - s0.childCpuMs) / execs).toFixed(1)} ms; shim's own process clones in 20 execs: ${forks} (${vforks} with CLONE_VFORK)${st.error ? ` (strace: ${st.error.message})` : ''}`
      );
      await c.ctr(['task', 'kill', '-s', 'KILL', id]);
    }
  } finally {
    await c.stop();
  }
}

const args = process.argv.slice(2);
const shim = args[0] === '--shim';
const n = Number((shim ? args[1] : args[0]) ?? (shim ? 60 : 300));
(shim ? realShims(n) : inProcess(n)).catch((e) => {
  console.error(e);
  process.exit(1);
});
