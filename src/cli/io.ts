// Where CLI commands write, injectable so tests can capture output and stop long-running commands.

export interface Out {
  write(s: string): void;
  isTTY?: boolean;
}

export interface CliContext {
  out: Out;
  err: Out;
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM (or by a test) to end streaming commands. */
  signal: AbortSignal;
  now?: () => number;
}
