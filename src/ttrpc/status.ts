// gRPC status codes as carried in ttrpc's google.rpc.Status, and the error type that carries one.

export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

export class TtrpcError extends Error {
  readonly code: Code;
  constructor(code: Code, message: string) {
    super(message);
    this.name = 'TtrpcError';
    this.code = code;
  }
  override toString(): string {
    return `TtrpcError: ${Code[this.code] ?? this.code}: ${this.message}`;
  }
}

/** Message text used by Go's ttrpc for size-limit violations (both directions). */
export function oversizeMessage(length: number, max: number): string {
  return `message length ${length} exceed maximum message size of ${max}`;
}

/** The error every pending call gets when the connection is gone (Go: ErrClosed). */
export function closedError(): TtrpcError {
  return new TtrpcError(Code.UNAVAILABLE, 'ttrpc: closed');
}

// Node errno codes mapped the way Go's ttrpc maps os errors (IsExist/IsNotExist/IsPermission).
const ERRNO_CODES: Record<string, Code> = {
  EEXIST: Code.ALREADY_EXISTS,
  ENOTEMPTY: Code.ALREADY_EXISTS,
  ENOENT: Code.NOT_FOUND,
  EACCES: Code.PERMISSION_DENIED,
  EPERM: Code.PERMISSION_DENIED,
};

/**
 * Turn anything a handler threw into a status. TtrpcError keeps its code; errno-style errors map like
 * Go's os errors; everything else is UNKNOWN with the error's message.
 */
export function toStatus(err: unknown): { code: Code; message: string } {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message };
  if (err instanceof Error) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (typeof errno === 'string' && errno in ERRNO_CODES) return { code: ERRNO_CODES[errno], message: err.message };
    return { code: Code.UNKNOWN, message: err.message };
  }
  return { code: Code.UNKNOWN, message: String(err) };
}
