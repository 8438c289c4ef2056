// Errors with the status codes and texts containerd expects from a runc shim (containerd's errdefs
// mapped to gRPC codes, as containerd-shim-runc-v2 returns them).
import { Code, TtrpcError } from '../ttrpc/status';

export const notFound = (msg: string) => new TtrpcError(Code.NOT_FOUND, `${msg}: not found`);
export const alreadyExists = (msg: string) => new TtrpcError(Code.ALREADY_EXISTS, `${msg}: already exists`);
export const failedPrecondition = (msg: string) => new TtrpcError(Code.FAILED_PRECONDITION, `${msg}: failed precondition`);
export const invalidArgument = (msg: string) => new TtrpcError(Code.INVALID_ARGUMENT, msg);
export const unknown = (msg: string) => new TtrpcError(Code.UNKNOWN, msg);

export const containerNotCreated = () => notFound('container not created');
export const processDoesNotExist = (execId: string) => notFound(`process does not exist ${execId}`);

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
