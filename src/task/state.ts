// The process state machines of containerd's runc shim (pkg/process init_state.go, exec_state.go) as
// tables: each state lists, for every operation, either the state the operation leads to or the
// exact error the Go shim returns there. Every write of a process state goes through StateMachine.
import { notFound, unknown } from './errors';

export type InitState = 'created' | 'created-checkpoint' | 'running' | 'paused' | 'stopped' | 'deleted';
export type ExecState = 'created' | 'running' | 'stopped' | 'deleted';
/** `exit`: the reaper reported the process gone (never refused). */
export type InitOp = 'start' | 'delete' | 'pause' | 'resume' | 'update' | 'checkpoint' | 'exec' | 'kill' | 'exit';
export type ExecOp = 'start' | 'delete' | 'kill' | 'resize' | 'exit';

/** A cell is the target state (the row's own name: the state stays) or the refusal. */
type Table<S extends string, O extends string> = Record<S, Record<O, S | string>>;

const INIT: Table<InitState, InitOp> = {
  created: {
    start: 'running',
    delete: 'deleted',
    pause: 'cannot pause task in created state',
    resume: 'cannot resume task in created state',
    update: 'created',
    checkpoint: 'cannot checkpoint a task in created state',
    exec: 'created',
    kill: 'created',
    exit: 'stopped',
  },
  'created-checkpoint': {
    start: 'running',
    delete: 'deleted',
    pause: 'cannot pause task in created state',
    resume: 'cannot resume task in created state',
    update: 'created-checkpoint',
    checkpoint: 'cannot checkpoint a task in created state',
    exec: 'cannot exec in a created state',
    kill: 'created-checkpoint',
    exit: 'stopped',
  },
  running: {
    start: 'cannot start a running process',
    delete: 'cannot delete a running process',
    pause: 'paused',
    resume: 'cannot resume a running process',
    update: 'running',
    checkpoint: 'running',
    exec: 'running',
    kill: 'running',
    exit: 'stopped',
  },
  paused: {
    start: 'cannot start a paused process',
    delete: 'cannot delete a paused process',
    pause: 'cannot pause a paused container',
    resume: 'running',
    update: 'paused',
    checkpoint: 'paused',
    exec: 'cannot exec in a paused state',
    kill: 'paused',
    exit: 'stopped',
  },
  stopped: {
    start: 'cannot start a stopped process',
    delete: 'deleted',
    pause: 'cannot pause a stopped container',
    resume: 'cannot resume a stopped container',
    update: 'cannot update a stopped container',
    checkpoint: 'cannot checkpoint a stopped container',
    exec: 'cannot exec in a stopped state',
    kill: 'stopped',
    exit: 'stopped',
  },
  deleted: {
    start: 'cannot start a deleted process',
    delete: 'cannot delete a deleted process',
    pause: 'cannot pause a deleted process',
    resume: 'cannot resume a deleted process',
    update: 'cannot update a deleted process',
    checkpoint: 'cannot checkpoint a deleted process',
    exec: 'cannot exec in a deleted state',
    kill: 'cannot kill a deleted process',
    exit: 'deleted',
  },
};

// Resize: the Go shim consults the exec's state (execStoppedState.Resize refuses), never the init's
// (Init.Resize only looks for a console), so the init table has no resize column.
const EXEC: Table<ExecState, ExecOp> = {
  created: { start: 'running', delete: 'deleted', kill: 'created', resize: 'created', exit: 'stopped' },
  running: {
    start: 'cannot start a running process',
    delete: 'cannot delete a running process',
    kill: 'running',
    resize: 'running',
    exit: 'stopped',
  },
  stopped: {
    start: 'cannot start a stopped process',
    delete: 'deleted',
    kill: 'stopped',
    resize: 'cannot resize a stopped container',
    exit: 'stopped',
  },
  deleted: {
    start: 'cannot start a deleted process',
    delete: 'cannot delete a deleted process',
    kill: 'cannot kill a deleted process',
    resize: 'cannot resize a deleted process',
    exit: 'deleted',
  },
};

/** deletedState.Kill wraps errdefs.ErrNotFound in Go; every other refusal is a plain error (UNKNOWN). */
const NOT_FOUND_REFUSALS = new Set(['cannot kill a deleted process']);

export class StateMachine<S extends string, O extends string> {
  private current: S;
  /** The operation whose work is in flight (a Pause in flight is the PAUSING status). */
  private inFlight: O | null = null;

  constructor(
    private readonly table: Table<S, O>,
    initial: S
  ) {
    this.current = initial;
  }

  get state(): S {
    return this.current;
  }
  get pending(): O | null {
    return this.inFlight;
  }

  /** The state `op` leads to from the current one; throws the Go shim's refusal. */
  check(op: O): S {
    const to = this.table[this.current][op];
    if (to in this.table) return to as S;
    throw NOT_FOUND_REFUSALS.has(to) ? notFound(to) : unknown(to);
  }

  /**
   * Checks `op`, runs its work and moves to the target state when the work succeeded, unless
   * another transition (an exit, which never waits) came meanwhile: then the later state stands
   * and `applied` is false.
   */
  async run<T>(op: O, work: () => Promise<T>): Promise<{ result: T; applied: boolean }> {
    const to = this.check(op);
    const from = this.current;
    this.inFlight = op;
    try {
      const result = await work();
      const applied = this.current === from;
      if (applied) this.current = to;
      return { result, applied };
    } finally {
      this.inFlight = null;
    }
  }

  /** In-place upgrade (src/upgrade/): the state the previous process had, taken as it is. */
  restore(state: S): void {
    if (!(state in this.table)) throw new Error(`unknown process state ${JSON.stringify(state)}`);
    this.current = state;
  }

  /** A transition without work (the exit, a Create from a checkpoint): applied now; returns the state it left. */
  apply(op: O): S {
    const from = this.current;
    this.current = this.check(op);
    return from;
  }
}

export const initStateMachine = (initial: InitState) => new StateMachine<InitState, InitOp>(INIT, initial);
export const execStateMachine = (initial: ExecState = 'created') => new StateMachine<ExecState, ExecOp>(EXEC, initial);
