// A --require hook for tsshim's processes in the per-call cost tools (exec-cost, stats-cost,
// pause-cost), to try V8 flags without a rebuild and to profile the measured calls:
// <PREFIX>_V8: V8 flags set at start; <PREFIX>_PROF=<dir>: a CPU profile written there, started
// and stopped by SIGUSR2.
import * as fs from 'node:fs';
import * as path from 'node:path';

function hookSource(prefix: string): string {
  return `
if (process.env.${prefix}_V8) require('v8').setFlagsFromString(process.env.${prefix}_V8);
if (process.env.${prefix}_PROF) {
  const inspector = require('inspector');
  let session = null;
  process.on('SIGUSR2', () => {
    if (!session) {
      session = new inspector.Session();
      session.connect();
      session.post('Profiler.enable');
      session.post('Profiler.setSamplingInterval', { interval: 50 });
      session.post('Profiler.start');
      return;
    }
    const s = session;
    session = null;
    s.post('Profiler.stop', (err, r) => {
      if (!err) require('fs').writeFileSync(require('path').join(process.env.${prefix}_PROF, 'prof-' + process.pid + '-' + Date.now() + '.cpuprofile'), JSON.stringify(r.profile));
      s.disconnect();
    });
  });
}
`;
}

/** The environment that loads the hook (for containerd, whose shims inherit it); undefined when neither variable is set. */
export function profileHookEnv(prefix: string): Record<string, string> | undefined {
  const prof = process.env[`${prefix}_PROF`];
  const v8 = process.env[`${prefix}_V8`];
  if (!prof && !v8) return undefined;
  const dir = fs.mkdtempSync(`/tmp/${prefix.toLowerCase().replace(/_/g, '-')}-hook-`);
  const hook = path.join(dir, 'hook.js');
  fs.writeFileSync(hook, hookSource(prefix));
  if (prof) fs.mkdirSync(prof, { recursive: true });
  return { NODE_OPTIONS: `--require ${hook}`, [`${prefix}_PROF`]: prof ?? '', [`${prefix}_V8`]: v8 ?? '' };
}
