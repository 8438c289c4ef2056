// The restart survival scenario, shared by test/e2e/survival.test.ts (short) and
// test/stress/restart-stress.ts (long, and against io.containerd.runc.v2 for comparison).
//
// N detached containers poll a control file and trap TERM. Each cycle: kill -9 containerd; while it
// is down some containers exit (control file with a random code, SIGTERM -> 77, SIGKILL -> 137);
// restart; then check every task's state and exit status, that each exit during the downtime was
// published exactly once and in order, run execs, and delete the stopped containers. At the end the
// rest are killed and deleted and nothing may be left: shims, zombies, mounts, sockets, outboxes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TSSHIM_RUNTIME, type Containerd } from './harness';
import { closeClients, collectEvents, getTask, type ContainerdEvent, type EventCollector } from './containerd-api';
import { ensureBusyboxImage } from './rootfs';
import { EventGate } from './event-gate';
import { daemonShims, spareShims } from './containers';
import { Random, mountsUnder, pidAlive, readBundleFile, sampleShim, zombiesOf, listDir } from './proc';
import { sleep, until } from './wait';

export type ShimMode = 'single' | 'group' | 'per-node';

export interface ScenarioOptions {
  runtime: string;
  containers: number;
  cycles: number;
  /** Downtime of each cycle in ms. */
  downtimeMs: (cycle: number) => number;
  execsPerCycle: number;
  seed: number;
  /** 'group' puts every container in one shim (sandbox annotation, honoured by both runtimes). */
  mode: ShimMode;
  /** How long to wait after a restart for the exit events of the downtime. */
  eventWaitMs: number;
  log: (msg: string) => void;
}

export interface ResourceFigures {
  shims: number;
  fdsTotal: number;
  rssTotal: number;
  childrenTotal: number;
}

export interface ScenarioReport {
  runtime: string;
  mode: ShimMode;
  seed: number;
  containers: number;
  restarts: number;
  downtimesMs: number[];
  exitsDuringDowntime: number;
  exitEventsDelivered: number;
  lostEvents: number;
  duplicateEvents: number;
  wrongStates: number;
  wrongExitStatus: number;
  execsOk: number;
  execsFailed: number;
  zombies: number;
  leakedShims: number;
  leakedMounts: number;
  leakedFiles: number;
  /** Idle warm spares at the end (tsshim keeps at most one per containerd). */
  sparesLeft: number;
  start: ResourceFigures;
  end: ResourceFigures;
  durationMs: number;
  problems: string[];
}

const TERM_STATUS = 77;
const SANDBOX_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
const OUTBOX_DIR = process.env.TSSHIM_STATE_DIR || '/run/tsshim';

interface Box {
  id: string;
  pid: number;
  bundle: string;
  socket: string;
  /** null while running. */
  expectedExit: number | null;
  deleted: boolean;
}

interface ExpectedExit {
  containerId: string;
  execId: string;
  status: number;
  cycle: number;
  downtime: boolean;
}

/** The container's script: exit with the code written to /ctl/<id>, or 77 on TERM. */
function script(id: string): string {
  return `trap "exit ${TERM_STATUS}" TERM; while :; do if [ -f /ctl/${id} ]; then read c < /ctl/${id}; exit $c; fi; sleep 0.2; done`;
}

function exitKey(containerId: string, execId: string): string {
  return `${containerId}/${execId || containerId}`;
}

function sumFigures(pids: number[]): ResourceFigures {
  const f: ResourceFigures = { shims: pids.length, fdsTotal: 0, rssTotal: 0, childrenTotal: 0 };
  for (const pid of pids) {
    const s = sampleShim(pid);
    f.fdsTotal += Math.max(0, s.fds);
    f.rssTotal += Math.max(0, s.rss);
    f.childrenTotal += s.children;
  }
  return f;
}

/** Zombies under a shim that are still zombies half a second later (a fresh exit is not a leak). */
async function persistentZombies(c: Containerd): Promise<number[]> {
  const first = new Set(zombiesOf(c.shimPids()));
  if (first.size === 0) return [];
  await sleep(500);
  return zombiesOf(c.shimPids()).filter((z) => first.has(z));
}

export async function runRestartScenario(c: Containerd, o: ScenarioOptions): Promise<ScenarioReport> {
  const started = Date.now();
  const rng = new Random(o.seed);
  const problems: string[] = [];
  const problem = (m: string): void => {
    problems.push(m);
    o.log(`PROBLEM: ${m}`);
  };
  const report: ScenarioReport = {
    runtime: o.runtime,
    mode: o.mode,
    seed: o.seed,
    containers: o.containers,
    restarts: 0,
    downtimesMs: [],
    exitsDuringDowntime: 0,
    exitEventsDelivered: 0,
    lostEvents: 0,
    duplicateEvents: 0,
    wrongStates: 0,
    wrongExitStatus: 0,
    execsOk: 0,
    execsFailed: 0,
    zombies: 0,
    leakedShims: 0,
    leakedMounts: 0,
    leakedFiles: 0,
    sparesLeft: 0,
    start: { shims: 0, fdsTotal: 0, rssTotal: 0, childrenTotal: 0 },
    end: { shims: 0, fdsTotal: 0, rssTotal: 0, childrenTotal: 0 },
    durationMs: 0,
    problems,
  };

  const image = await ensureBusyboxImage(c);
  const ctlDir = fs.mkdtempSync(path.join(c.dir, 'ctl-'));
  const gate = new EventGate(c);
  const all: ContainerdEvent[] = [];
  let collector: EventCollector = await collectEvents(c);
  let collected = 0;
  const absorb = (): void => {
    // The collector's array only grows: move what is new into the run-wide, ordered list.
    for (; collected < collector.events.length; collected++) all.push(collector.events[collected]);
  };

  // ---- containers ---------------------------------------------------------------------------
  const boxes: Box[] = [];
  const runTag = `${process.pid.toString(36)}${Date.now().toString(36)}`;
  const ids = Array.from({ length: o.containers }, (_, i) => `sv-${runTag}-${i}`);
  const groupArgs = o.mode === 'group' ? ['--annotation', `${SANDBOX_ANNOTATION}=sv-${runTag}`] : [];
  const batch = 4;
  for (let i = 0; i < ids.length; i += batch) {
    await Promise.all(
      ids.slice(i, i + batch).map(async (id) => {
        const r = await c.ctr(
          [
            'run',
            '-d',
            '--runtime',
            o.runtime,
            ...groupArgs,
            '--mount',
            `type=bind,src=${ctlDir},dst=/ctl,options=rbind:rw`,
            image,
            id,
            'sh',
            '-c',
            script(id),
          ],
          { timeoutMs: 60_000 }
        );
        if (r.code !== 0) throw new Error(`ctr run ${id} failed (${r.code}): ${r.stderr}\n${c.logTail(3000)}`);
      })
    );
  }
  for (const id of ids) {
    const t = await getTask(c, id);
    const bundle = c.bundleDir(id);
    const address = readBundleFile(bundle, 'address') ?? '';
    boxes.push({
      id,
      pid: t.pid,
      bundle,
      socket: address.replace(/^unix:\/\//, ''),
      expectedExit: null,
      deleted: false,
    });
  }
  o.log(`${o.runtime} (${o.mode}): ${boxes.length} containers running, ${daemonShims(c).length} shim(s)`);
  report.start = sumFigures(daemonShims(c));

  const expected: ExpectedExit[] = [];
  const byId = new Map(boxes.map((b) => [b.id, b]));
  const running = (): Box[] => boxes.filter((b) => b.expectedExit === null && !b.deleted);

  const exitEvents = (containerId: string, execId: string): ContainerdEvent[] =>
    all.filter(
      (e) =>
        e.topic === '/tasks/exit' && e.event?.container_id === containerId && e.event?.id === (execId || containerId)
    );

  async function waitForExitEvents(want: ExpectedExit[], timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      absorb();
      if (want.every((x) => exitEvents(x.containerId, x.execId).length > 0) || Date.now() > end) return;
      await sleep(100);
    }
  }

  // ---- cycles -------------------------------------------------------------------------------
  for (let cycle = 1; cycle <= o.cycles; cycle++) {
    const downtime = o.downtimeMs(cycle);
    absorb();
    await c.kill9();
    const downAt = Date.now();
    collector.stop();
    closeClients(c); // a fresh gRPC channel after the restart, not one stuck in reconnect back-off
    gate.install();
    gate.close();

    // Containers exit while containerd is away.
    const candidates = running();
    const maxExits = Math.max(1, Math.floor(o.containers / (o.cycles + 1)));
    const k = Math.min(candidates.length - 1, 1 + rng.int(maxExits));
    const victims = rng.sample(candidates, Math.max(0, k));
    const thisCycle: ExpectedExit[] = [];
    for (const b of victims) {
      const how = rng.pick(['file', 'file', 'term', 'kill'] as const);
      let status: number;
      if (how === 'file') {
        status = rng.int(126);
        const tmp = path.join(ctlDir, `.tmp-${b.id}`);
        fs.writeFileSync(tmp, `${status}\n`);
        fs.renameSync(tmp, path.join(ctlDir, b.id));
      } else {
        status = how === 'term' ? TERM_STATUS : 137;
        try {
          process.kill(b.pid, how === 'term' ? 'SIGTERM' : 'SIGKILL');
        } catch (e) {
          problem(`cannot signal ${b.id}: ${(e as Error).message}`);
        }
      }
      b.expectedExit = status;
      const x = { containerId: b.id, execId: '', status, cycle, downtime: true };
      expected.push(x);
      thisCycle.push(x);
    }
    // The exits happen (and are reaped by the shim) during the downtime, not after the restart.
    for (const b of victims) {
      try {
        await until(() => !pidAlive(b.pid), `${b.id} (pid ${b.pid}) to exit`, 10_000);
        if (o.runtime === TSSHIM_RUNTIME)
          await until(() => fs.existsSync(path.join(b.bundle, 'init.exit')), `${b.id} init.exit`, 5000);
      } catch (e) {
        problem(`cycle ${cycle}: ${(e as Error).message}`);
      }
    }
    report.exitsDuringDowntime += victims.length;
    const left = downtime - (Date.now() - downAt);
    if (left > 0) await sleep(left);
    await c.restart();
    report.restarts++;
    collector = await collectEvents(c);
    collected = 0;
    gate.open();
    // What the shims saw: from the kill until containerd answered them again.
    report.downtimesMs.push(Date.now() - downAt);
    o.log(
      `cycle ${cycle}: down ${Date.now() - downAt} ms, ${victims.length} exited meanwhile; waiting for their events`
    );
    await waitForExitEvents(thisCycle, o.eventWaitMs);
    report.exitEventsDelivered += thisCycle.filter((x) => exitEvents(x.containerId, x.execId).length > 0).length;

    // States and exit statuses as containerd reports them. containerd 2.x removes, on load, a task
    // whose process exited while it was down (its shim reports no pids: "cleaning leaked shim
    // process"), for the Go shim too; 1.6 keeps it STOPPED with its exit status.
    const removedOnLoad = c.release.major >= 2;
    for (const b of boxes) {
      if (b.deleted) continue;
      if (removedOnLoad && b.expectedExit !== null) {
        const t = await getTask(c, b.id).then(
          (x) => x.status,
          (e: Error) => (/NOT_FOUND/.test(e.message) ? 'gone' : e.message)
        );
        if (t !== 'gone') {
          report.wrongStates++;
          problem(`cycle ${cycle}: ${b.id} is ${t}, expected removed by containerd ${c.release.version}`);
        }
        continue;
      }
      try {
        const t = await getTask(c, b.id);
        const want = b.expectedExit === null ? 'RUNNING' : 'STOPPED';
        if (t.status !== want) {
          report.wrongStates++;
          problem(`cycle ${cycle}: ${b.id} is ${t.status}, expected ${want}`);
        } else if (b.expectedExit !== null && t.exit_status !== b.expectedExit) {
          report.wrongExitStatus++;
          problem(`cycle ${cycle}: ${b.id} exit status ${t.exit_status}, expected ${b.expectedExit}`);
        }
      } catch (e) {
        report.wrongStates++;
        problem(`cycle ${cycle}: getTask ${b.id}: ${(e as Error).message}`);
      }
    }

    // Execs in surviving containers.
    const execTargets = rng.sample(running(), o.execsPerCycle);
    await Promise.all(
      execTargets.map(async (b, n) => {
        const execId = `x${cycle}-${n}`;
        const code = 1 + rng.int(100);
        const r = await c.ctr(['task', 'exec', '--exec-id', execId, b.id, 'sh', '-c', `echo ${execId}; exit ${code}`], {
          timeoutMs: 30_000,
        });
        if (r.code === code && r.stdout === `${execId}\n`) report.execsOk++;
        else {
          report.execsFailed++;
          problem(
            `cycle ${cycle}: exec ${execId} in ${b.id}: code ${r.code} stdout ${JSON.stringify(r.stdout)} ${r.stderr}`
          );
        }
        expected.push({ containerId: b.id, execId, status: code, cycle, downtime: false });
      })
    );

    // Stopped containers can be deleted after the restart, with their real exit status.
    for (const b of victims) {
      const r = removedOnLoad ? { code: 0, stderr: '' } : await c.ctr(['task', 'delete', b.id], { timeoutMs: 30_000 });
      const d = await c.ctr(['container', 'delete', b.id], { timeoutMs: 30_000 });
      if (r.code !== 0 || d.code !== 0) problem(`cycle ${cycle}: delete ${b.id}: ${r.stderr} ${d.stderr}`);
      b.deleted = true;
    }
    const z = await persistentZombies(c);
    if (z.length) {
      report.zombies = Math.max(report.zombies, z.length);
      problem(`cycle ${cycle}: zombies under shims: ${z.join(',')}`);
    }
  }

  // ---- final kill and delete ----------------------------------------------------------------
  absorb();
  report.end = sumFigures(daemonShims(c));
  const rest = running();
  await Promise.all(
    rest.map(async (b) => {
      const r = await c.ctr(['task', 'kill', b.id], { timeoutMs: 30_000 });
      if (r.code !== 0) problem(`kill ${b.id}: ${r.stderr}`);
      b.expectedExit = TERM_STATUS;
      expected.push({ containerId: b.id, execId: '', status: TERM_STATUS, cycle: o.cycles + 1, downtime: false });
    })
  );
  await waitForExitEvents(
    expected.filter((x) => x.cycle === o.cycles + 1),
    20_000
  );
  for (const b of rest) {
    const t = await getTask(c, b.id).catch(() => null);
    if (!t || t.status !== 'STOPPED' || t.exit_status !== TERM_STATUS) {
      report.wrongStates++;
      problem(`after kill: ${b.id} is ${t?.status} ${t?.exit_status}, expected STOPPED ${TERM_STATUS}`);
    }
    const r = await c.ctr(['task', 'delete', b.id], { timeoutMs: 30_000 });
    const d = await c.ctr(['container', 'delete', b.id], { timeoutMs: 30_000 });
    if (r.code !== 0 || d.code !== 0) problem(`delete ${b.id}: ${r.stderr} ${d.stderr}`);
    b.deleted = true;
  }
  await sleep(500);
  absorb();

  // ---- event accounting ---------------------------------------------------------------------
  for (const x of expected) {
    const seen = exitEvents(x.containerId, x.execId);
    if (seen.length === 0) {
      report.lostEvents++;
      problem(
        `lost /tasks/exit ${exitKey(x.containerId, x.execId)} (cycle ${x.cycle}${x.downtime ? ', during downtime' : ''})`
      );
    } else {
      if (seen.length > 1) {
        report.duplicateEvents += seen.length - 1;
        problem(`${seen.length} x /tasks/exit ${exitKey(x.containerId, x.execId)}`);
      }
      if (seen[0].event?.exit_status !== x.status) {
        report.wrongExitStatus++;
        problem(
          `/tasks/exit ${exitKey(x.containerId, x.execId)} status ${seen[0].event?.exit_status}, expected ${x.status}`
        );
      }
    }
  }
  // Any other event twice (create, start, exec-added, exec-started, delete) is a duplicate too.
  const counts = new Map<string, number>();
  for (const e of all) {
    const cid = e.event?.container_id;
    if (!cid || !byId.has(cid) || e.topic === '/tasks/exit') continue;
    const key = `${e.topic} ${cid} ${e.event?.exec_id ?? e.event?.id ?? ''}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const [key, n] of counts)
    if (n > 1) {
      report.duplicateEvents += n - 1;
      problem(`${n} x ${key}`);
    }
  // Per container: every exec exit before the init's exit, the init's exit before /tasks/delete.
  for (const b of boxes) {
    const mine = all.filter((e) => e.event?.container_id === b.id);
    const initExit = mine.findIndex((e) => e.topic === '/tasks/exit' && e.event?.id === b.id);
    const lastExecExit = mine
      .map((e, i) => (e.topic === '/tasks/exit' && e.event?.id !== b.id ? i : -1))
      .reduce((a, v) => Math.max(a, v), -1);
    const del = mine.findIndex((e) => e.topic === '/tasks/delete');
    if (initExit >= 0 && lastExecExit > initExit) problem(`${b.id}: an exec exit after the init exit`);
    if (initExit >= 0 && del >= 0 && del < initExit) problem(`${b.id}: /tasks/delete before /tasks/exit`);
  }
  // ---- leftovers ----------------------------------------------------------------------------
  // The per-node shim outlives its containers by design: stop it the polite way, as an operator
  // would, and it must take its socket, outbox and pid file with it.
  if (o.mode === 'per-node' && o.runtime === TSSHIM_RUNTIME) {
    const served = new Set(boxes.map((b) => b.socket));
    for (const pid of daemonShims(c)) {
      process.kill(pid, 'SIGTERM');
      try {
        await until(() => !pidAlive(pid), `per-node shim ${pid} to stop on SIGTERM`, 10_000);
      } catch (e) {
        problem((e as Error).message);
      }
    }
    if (served.size !== 1) problem(`per-node containers were served by ${served.size} sockets`);
  }
  // A warm spare may stay (one, by design); any other shim process is a leak.
  const leftovers = (): number[] => c.shimPids().filter((p) => !spareShims(c).includes(p));
  try {
    await until(() => leftovers().length === 0, 'shims to exit', 15_000);
  } catch {
    /* counted below */
  }
  report.leakedShims = leftovers().length;
  if (report.leakedShims) problem(`shims left: ${leftovers().join(',')}`);
  // Not counted as a leak: spares retire after TSSHIM_SPARE_IDLE_MS or with their containerd. More
  // than one waiting is a start-up race of concurrent daemons (src/shim/spare.ts), reported only.
  report.sparesLeft = spareShims(c).length;
  if (report.sparesLeft > 1) o.log(`note: ${report.sparesLeft} idle warm spares left (one is the design)`);
  const mounts = mountsUnder(c.state);
  report.leakedMounts = mounts.length;
  if (mounts.length) problem(`mounts left: ${mounts.join(' ')}`);
  const files: string[] = [];
  for (const socket of new Set(boxes.map((b) => b.socket).filter(Boolean))) {
    if (fs.existsSync(socket)) files.push(socket);
    for (const f of listDir(OUTBOX_DIR))
      if (f.startsWith(path.basename(socket) + '.')) files.push(path.join(OUTBOX_DIR, f));
  }
  for (const b of boxes) if (fs.existsSync(b.bundle)) files.push(b.bundle);
  report.leakedFiles = files.length;
  if (files.length) problem(`files left: ${files.join(' ')}`);
  collector.stop();
  report.durationMs = Date.now() - started;
  return report;
}

export function formatReport(r: ScenarioReport): string {
  const mibs = (b: number): string => (b / 1048576).toFixed(1);
  return [
    `runtime ${r.runtime} mode ${r.mode} seed ${r.seed}: ${r.containers} containers, ${r.restarts} restarts survived ` +
      `(downtimes ${r.downtimesMs.map((d) => (d / 1000).toFixed(1) + 's').join(' ')}), ${(r.durationMs / 1000).toFixed(0)} s`,
    `  exits during downtime ${r.exitsDuringDowntime}, their events delivered after restart ${r.exitEventsDelivered}`,
    `  lost events ${r.lostEvents}, duplicate events ${r.duplicateEvents}, wrong states ${r.wrongStates}, wrong exit status ${r.wrongExitStatus}`,
    `  execs ok ${r.execsOk} failed ${r.execsFailed}; zombies ${r.zombies}, leaked shims ${r.leakedShims}, leaked mounts ${r.leakedMounts}, leaked files ${r.leakedFiles}, idle spares ${r.sparesLeft}`,
    `  shims: start ${r.start.shims} (fds ${r.start.fdsTotal}, RSS ${mibs(r.start.rssTotal)} MiB, children ${r.start.childrenTotal}); ` +
      `end ${r.end.shims} (fds ${r.end.fdsTotal}, RSS ${mibs(r.end.rssTotal)} MiB, children ${r.end.childrenTotal})`,
  ].join('\n');
}
