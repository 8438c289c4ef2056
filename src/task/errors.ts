// The Task core's errors: a kind (containerd's errdefs classes) and the text containerd users know
// from the runc shim. They become ttrpc status codes in one place, rpc.ts (rpcError).

export type ErrorKind = 'not-found' | 'already-exists' | 'failed-precondition' | 'invalid-argument' | 'unknown';

export class TaskError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string
  ) {
    super(message);
    this.name = 'TaskError';
  }
}

// The suffixes are what Go's errdefs.ToGRPC adds (`%w` of errdefs.ErrNotFound and friends).
export const notFound = (msg: string) => new TaskError('not-found', `${msg}: not found`);
export const alreadyExists = (msg: string) => new TaskError('already-exists', `${msg}: already exists`);
export const failedPrecondition = (msg: string) => new TaskError('failed-precondition', `${msg}: failed precondition`);
export const invalidArgument = (msg: string) => new TaskError('invalid-argument', msg);
export const unknown = (msg: string) => new TaskError('unknown', msg);

export const containerNotCreated = () => notFound('container not created');
export const processDoesNotExist = (execId: string) => notFound(`process does not exist ${execId}`);

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
