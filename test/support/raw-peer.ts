// Test support: a raw ttrpc peer that writes arbitrary bytes and reads whole frames back, used by the
// unit, fuzz and interop tests to exercise the wire without going through our Client.
import * as net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeFrame, FrameDecoder, FrameHeader } from '../../src/ttrpc/channel';

export interface RawFrame {
  header: FrameHeader;
  data: Buffer;
}

export class RawPeer {
  private readonly frames: RawFrame[] = [];
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(readonly socket: net.Socket) {
    const decoder = new FrameDecoder(
      {
        frame: (header, data) => this.deliver({ header, data: Buffer.from(data) }),
        oversize: (header) => this.deliver({ header, data: Buffer.alloc(0) }),
      },
      0xffffffff
    );
    socket.on('data', (c: Buffer) => decoder.push(c));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      })
    );
  }

  static connect(path: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawPeer(s));
      });
    });
  }

  write(b: Uint8Array): void {
    this.socket.write(b);
  }

  sendFrame(streamId: number, type: number, flags: number, data: Uint8Array): void {
    this.write(encodeFrame(streamId, type, flags, data));
  }

  /** Next frame, or null if the connection closed / nothing arrived within `timeoutMs`. */
  async nextFrame(timeoutMs = 2000): Promise<RawFrame | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.isClosed) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.frames.shift() as RawFrame;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private deliver(f: RawFrame): void {
    this.frames.push(f);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

/** A private temp dir for sockets; remove() when done. */
export function tempSocketDir(prefix = 'ttrpc-test-'): {
  dir: string;
  path: (name: string) => string;
  remove: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
