// Entry of containerd-shim-tsshim-v2: `start`, `delete`, `-v`, `-info`, or daemon mode.
import * as fs from 'node:fs';
import { parseFlags, FlagError } from '../shim/flags';
import { isValidIdentifier } from '../sys/identifiers';
import { readConfig } from '../shim/config';
import { PROBE_ARG } from '../upgrade/exec';
import { VERSION, REVISION } from '../shim/version';
import { buildingSnapshot, prepareSnapshot } from './snapshot';
import { restoreExtraCaCerts } from '../shim/node-flags';
import { dropRelativeLibraryDirs } from '../sys/library-path';
import type { SpareRole } from '../shim/spare';

const NAME = 'containerd-shim-tsshim-v2';

function fail(msg: string, code = 1): never {
  process.stderr.write(`${NAME}: ${msg}\n`);
  process.exit(code);
}

const SHIM_USAGE = `Usage: ${NAME} -namespace <ns> -id <id> -address <addr> [-debug] [start|delete]
       ${NAME} -v | -info | -h

  start      find or start the shim serving this container's group; print its address
  delete     clean up the container of <bundle> after its shim is gone
  (none)     serve the Task API (containerd runs this through start)
`;

function readStdin(): Buffer {
  try {
    return fs.readFileSync(0);
  } catch {
    return Buffer.alloc(0);
  } // stdin closed or a tty: no input
}

async function main(argv: string[]): Promise<void> {
  // Before anything reads the environment or starts a program with it (node-flags.ts).
  restoreExtraCaCerts();
  dropRelativeLibraryDirs(process.env); // for runc, loggers and spares (sys/library-path.ts)
  // An in-place upgrade asks this build what it is before it execs it (src/upgrade/probe.ts).
  // With a state file, it also runs its restore on that state, taking over nothing (a dry run):
  // the answer comes first, so the daemon can tell a build that loads but crashes on its state.
  if (argv.length === 1 && argv[0] === PROBE_ARG) {
    const { probeAnswer, PROBE_MARK, DRY_RUN_MARK, DRY_RUN_FAILED_MARK } = await import('../upgrade/probe');
    const dryRunFile = readConfig(process.env).upgradeDryRunFile;
    process.stdout.write(`${PROBE_MARK}${JSON.stringify(probeAnswer(!!dryRunFile))}\n`);
    if (!dryRunFile) return;
    const { dryRunRestore } = await import('../upgrade/restore');
    try {
      const r = dryRunRestore(fs.readFileSync(dryRunFile, 'utf8'));
      process.stdout.write(`${DRY_RUN_MARK}${JSON.stringify(r)}\n`);
    } catch (e) {
      process.stdout.write(`${DRY_RUN_FAILED_MARK}${String((e as Error)?.message ?? e).split('\n')[0]}\n`);
      process.exit(1);
    }
    process.exit(0); // the dry run's objects may hold timers: nothing else is to run
  }
  let flags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    if (e instanceof FlagError) fail(`${e.message}\n${SHIM_USAGE}`, 2);
    throw e;
  }
  if (flags.help) {
    process.stdout.write(SHIM_USAGE);
    return;
  }
  if (flags.version) {
    process.stdout.write(
      `${NAME}:\n  Version:  ${VERSION}\n  Revision: ${REVISION}\n  Node version: ${process.version}\n\n`
    );
    return;
  }
  if (flags.info) {
    const { runtimeInfo } = await import('../shim/info');
    process.stdout.write(await runtimeInfo(readStdin()));
    return;
  }
  if (!flags.namespace) fail('shim namespace cannot be empty');
  if (!isValidIdentifier(flags.namespace)) fail(`invalid namespace ${JSON.stringify(flags.namespace)}`);
  if (flags.action !== '' && flags.id && !isValidIdentifier(flags.id)) fail(`invalid id ${JSON.stringify(flags.id)}`);
  // The one read of tsshim's environment variables; everything below is handed this object.
  const config = readConfig(process.env);
  switch (flags.action) {
    case 'start': {
      const { runStart } = await import('../shim/start');
      const { startOptions } = await import('../shim/start-options');
      const { readStartRequest, formatStartReply } = await import('../shim/bootstrap');
      const { daemonNodeArgs } = await import('../shim/node-flags');
      const { SHIM_ENTRY } = await import('./entry');
      const request = readStartRequest(readStdin(), process.env, flags);
      const address = await runStart(
        flags,
        startOptions(request.options, flags, config),
        daemonNodeArgs(SHIM_ENTRY, config.snapshot),
        config
      );
      // Exit without closing the listener: its close would unlink the socket the daemon serves.
      process.stdout.write(formatStartReply(address, request.generation), () => process.exit(0));
      return;
    }
    case 'delete': {
      const { runDelete } = await import('../shim/delete');
      const out = await runDelete(flags, config, (m) => process.stderr.write(m + '\n'));
      process.stdout.write(out);
      return;
    }
    case 'spare':
    case 'claim':
    case 'cold': {
      const { runSpare, runClaim, runCold } = await import('../shim/spare');
      // A cold start answers first: the Task service loads while containerd reads the answer and dials.
      const serve = flags.action === 'cold' ? null : await import('./serve');
      const { saveCodeCache, installChanged } = await import('./code-cache');
      const { daemonNodeArgs } = await import('../shim/node-flags');
      const { SHIM_ENTRY } = await import('./entry');
      const role: SpareRole = {
        becomeDaemon: async (f, c, bound, back) => (serve ?? (await import('./serve'))).runDaemon(f, c, bound, back),
        warmedUp: saveCodeCache,
        installChanged,
        // Chosen when used, not at boot: an install over this one (or a rebuild) replaces the blob.
        get daemonEntry() {
          return daemonNodeArgs(SHIM_ENTRY, config.snapshot);
        },
      };
      if (flags.action === 'cold') await runCold(flags, role, config);
      else await (flags.action === 'spare' ? runSpare(flags, role, config) : runClaim(flags, role, config));
      return;
    }
    case '': {
      const { runDaemon } = await import('./serve');
      await runDaemon(flags, config);
      return;
    }
    default:
      fail(`unknown action ${JSON.stringify(flags.action)}\n${SHIM_USAGE}`, 2);
  }
}

const run = (): void => {
  main(process.argv.slice(2)).catch((e) => fail(e?.stack ?? String(e)));
};
// Inside the V8 startup snapshot's build, main runs later: in the process started from the blob.
if (buildingSnapshot()) prepareSnapshot(run);
else run();
