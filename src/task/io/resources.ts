// Tracks what a ProcessIO holds so that failure half-way through setup and close() release the
// same things exactly once, in reverse order of acquisition.
import type * as net from 'node:net';
import type * as fs from 'node:fs';
import { closeFdQuietly, destroyAndWait } from './fds';

type Release = () => void | Promise<void>;

export class Resources {
  private releases: Release[] = [];
  private fds = new Set<number>();

  /** A raw fd owned until closeFd() or releaseAll(). */
  fd(fd: number): number {
    this.fds.add(fd);
    this.releases.push(() => this.closeFd(fd));
    return fd;
  }

  /** Closes an fd now (once); later releases of it are no-ops. */
  closeFd(fd: number | undefined): void {
    if (fd === undefined || !this.fds.delete(fd)) return;
    closeFdQuietly(fd);
  }

  /** Stops tracking an fd whose ownership moved elsewhere (e.g. into a socket). */
  forget(fd: number): void {
    this.fds.delete(fd);
  }

  stream<T extends net.Socket | fs.WriteStream>(s: T): T {
    // An error after we gave up on the stream must not become an uncaught exception.
    s.on('error', () => undefined);
    this.releases.push(() => destroyAndWait(s));
    return s;
  }

  onRelease(fn: Release): void {
    this.releases.push(fn);
  }

  async releaseAll(): Promise<void> {
    const pending = this.releases.reverse();
    this.releases = [];
    for (const release of pending) {
      try {
        await release();
      } catch {
        // best effort: keep releasing the rest
      }
    }
  }
}
