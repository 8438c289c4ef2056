// Typed runc CLI client (see client.ts) and its helpers.
export { RuncClient } from './client';
export type {
  RuncClientOptions,
  RuncStdio,
  CommandRunner,
  CallOptions,
  CreateOptions,
  ExecOptions,
  CheckpointOptions,
  RestoreOptions,
  RuncState,
  RuncVersion,
} from './client';
export { RuncError, lastLogError, readLogError } from './errors';
export { readPidFile } from './pidfile';
export type { ReadPidFileOptions } from './pidfile';
