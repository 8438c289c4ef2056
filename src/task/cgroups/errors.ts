/** The container has no cgroup (never found, or removed). The Task service maps it to NotFound (5). */
export class CgroupNotFoundError extends Error {
  readonly code = 'NOT_FOUND';
  constructor(detail?: string) {
    // Same text as the Go shim's errors.Wrap(errdefs.ErrNotFound, "cgroup does not exist").
    super('cgroup does not exist: not found');
    this.name = 'CgroupNotFoundError';
    if (detail) this.detail = detail;
  }
  detail?: string;
}

export function isNotExist(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
