// ctr on a real pseudo-terminal (node-pty), driven expect-style: what a user's terminal does
// (keystrokes, SIGWINCH on a resize, the exit code) reaches containerd and the shim as it would.
import * as pty from 'node-pty';
import type { Containerd } from './harness';

/** A ctr process on a pseudo-terminal, with expect-style waiting on its output. */
export class PtySession {
  private out = '';
  private seen = 0;
  private waiters: (() => void)[] = [];
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
  private readonly term: pty.IPty;

  constructor(c: Containerd, args: string[], size = { cols: 80, rows: 24 }) {
    this.term = pty.spawn(c.ctrBinary, ['--address', c.address, '--namespace', c.namespace, ...args], {
      name: 'xterm',
      cols: size.cols,
      rows: size.rows,
      // ctr 2.2+ would print its cgroup v1 deprecation warning into the terminal.
      env: { ...process.env, CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS: '1' } as Record<string, string>,
    });
    this.term.onData((d) => {
      this.out += d;
      for (const w of this.waiters.splice(0)) w();
    });
    this.exited = new Promise((resolve) =>
      this.term.onExit((e) => {
        for (const w of this.waiters.splice(0)) w();
        resolve(e);
      })
    );
  }

  get output(): string {
    return this.out;
  }

  /** Waits for `re` in the output that arrived after the previous match; returns the match. */
  async expect(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.out.slice(this.seen).match(re);
      if (m) {
        this.seen += (m.index ?? 0) + m[0].length;
        return m;
      }
      const left = end - Date.now();
      if (left <= 0)
        throw new Error(`timed out waiting for ${re}; output so far: ${JSON.stringify(this.out.slice(-1500))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  type(text: string): void {
    this.term.write(text);
  }
  resize(cols: number, rows: number): void {
    this.term.resize(cols, rows);
  }
  kill(): void {
    try {
      this.term.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }

  async exitCode(timeoutMs = 20_000): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const e = await Promise.race([
      this.exited,
      new Promise<never>((_, rej) => {
        timer = setTimeout(
          () => rej(new Error(`ctr did not exit; output: ${JSON.stringify(this.out.slice(-1500))}`)),
          timeoutMs
        );
      }),
    ]).finally(() => clearTimeout(timer));
    return e.exitCode;
  }
}

/** The busybox prompt (`/ # `), seen once the shell reads commands. */
export const PROMPT = /\/ # /;

/**
 * The size `stty size` reports once ctr's first ResizePty reached the terminal. ctr 1.6 sends it only
 * after Start returned (ctr run and ctr task exec alike) and puts no consoleSize in the spec on
 * Linux, so the shell may print its prompt and read a command before the size is set, with any shim:
 * busybox then answers "stty: standard input" (0 rows). Ask again until a size is there; a size that
 * never arrives fails the test when the bound is reached.
 */
export async function initialSize(s: PtySession): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    s.type('stty size\r');
    const m = await s.expect(/\n(\d+ \d+)\r*\n|stty: standard input/);
    if (m[1]) return m[1];
    if (attempt >= 100)
      throw new Error(`no terminal size after ${attempt} tries; output: ${JSON.stringify(s.output.slice(-1500))}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Resizes ctr's terminal to rows x cols and asks the shell `stty size` until it answers that size.
 * ctr turns SIGWINCH into ResizePty, but installs its SIGWINCH handler only after its first
 * ResizePty returned, so a signal that arrives earlier is lost (seen with runc.v2 under load): then
 * it resizes again to a new size (one more column), which sends a new SIGWINCH. Returns the size
 * wanted last and the size seen last; the caller asserts they are equal.
 */
export async function resizeUntilSeen(
  s: PtySession,
  rows: number,
  cols: number
): Promise<{ size: string; want: string }> {
  let size = '';
  let want = '';
  for (let attempt = 0; attempt < 4 && size !== want; attempt++) {
    want = `${rows} ${cols + attempt}`;
    s.resize(cols + attempt, rows);
    for (let i = 0; i < 10 && size !== want; i++) {
      await new Promise((r) => setTimeout(r, 100));
      s.type('stty size\r');
      size = (await s.expect(/\n(\d+ \d+)\r*\n/))[1];
    }
  }
  return { size, want };
}
