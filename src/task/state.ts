// The process state machines of containerd-shim-runc-v2 (pkg/process init_state.go, exec_state.go) as tables: each state lists what every operation
// does there, either a transition that is allowed or the exact error the Go shim returns.
import { unknown } from './errors';

export type InitState = 'created' | 'created-checkpoint' | 'running' | 'paused' | 'stopped' | 'deleted';
export type ExecState = 'created' | 'running' | 'stopped' | 'deleted';
export type InitOp = 'start' | 'delete' | 'pause' | 'resume' | 'update' | 'checkpoint' | 'exec' | 'kill';
export type ExecOp = 'start' | 'delete' | 'kill' | 'resize';

const OK = null;
type Table<S extends string, O extends string> = Record<S, Record<O, string | null>>;

const INIT: Table<InitState, InitOp> = {
  created: {
    start: OK, delete: OK, pause: 'cannot pause task in created state', resume: 'cannot resume task in created state',
    update: OK, checkpoint: 'cannot checkpoint a task in created state', exec: OK, kill: OK,
  },
  'created-checkpoint': {
    start: OK, delete: OK, pause: 'cannot pause task in created state', resume: 'cannot resume task in created state',
    update: OK, checkpoint: 'cannot checkpoint a task in created state', exec: 'cannot exec in a created state', kill: OK,
  },
  running: {
    start: 'cannot start a running process', delete: 'cannot delete a running process', pause: OK,
    resume: 'cannot resume a running process', update: OK, checkpoint: OK, exec: OK, kill: OK,
  },
  paused: {
    start: 'cannot start a paused process', delete: 'cannot delete a paused process', pause: 'cannot pause a paused container',
    resume: OK, update: OK, checkpoint: OK, exec: 'cannot exec in a paused state', kill: OK,
  },
  stopped: {
    start: 'cannot start a stopped process', delete: OK, pause: 'cannot pause a stopped container',
    resume: 'cannot resume a stopped container', update: 'cannot update a stopped container',
    checkpoint: 'cannot checkpoint a stopped container', exec: 'cannot exec in a stopped state', kill: OK,
  },
  deleted: {
    start: 'cannot start a deleted process', delete: 'cannot delete a deleted process', pause: 'cannot pause a deleted process',
    resume: 'cannot resume a deleted process', update: 'cannot update a deleted process',
    checkpoint: 'cannot checkpoint a deleted process', exec: 'cannot exec in a deleted state', kill: 'cannot kill a deleted process',
  },
};

const EXEC: Table<ExecState, ExecOp> = {
  created: { start: OK, delete: OK, kill: OK, resize: OK },
  running: { start: 'cannot start a running process', delete: 'cannot delete a running process', kill: OK, resize: OK },
  stopped: { start: 'cannot start a stopped process', delete: OK, kill: OK, resize: 'cannot resize a stopped container' },
  deleted: { start: 'cannot start a deleted process', delete: 'cannot delete a deleted process', kill: OK, resize: 'cannot resize a deleted process' },
};

/** Throws the Go shim's error when `op` is not allowed in `state`. */
export function checkInit(state: InitState, op: InitOp): void {
  const err = INIT[state][op];
  if (err) throw unknown(err);
}

export function checkExec(state: ExecState, op: ExecOp): void {
  const err = EXEC[state][op];
  if (err) throw unknown(err);
}
