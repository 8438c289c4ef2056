// Opening FIFOs without blocking, and wrapping raw fds as non-blocking Node streams.
//
// Why not fs.createReadStream on a FIFO: its reads run on the libuv threadpool and a read on an
// idle FIFO parks one of its 4 threads (UV_THREADPOOL_SIZE's default) for as long as the container stays quiet.
// Pipe handles (net.Socket) are driven by epoll instead: EAGAIN just means "wait for readiness".
import * as fs from 'node:fs';
import * as net from 'node:net';
import { promisify } from 'node:util';

const openAsync = promisify(fs.open);
const { O_RDONLY, O_WRONLY, O_APPEND, O_NONBLOCK } = fs.constants;

/** An output FIFO held open the way containerd's shims do. */
export interface OutputFifo {
  writer: net.Socket;
  /** Extra reader the shim never reads from; closed after the writer. */
  keepReaderFd: number;
}

/**
 * Opens an output FIFO (stdout/stderr). The Go shim opens it O_WRONLY (blocking until containerd's
 * reader exists) and then also O_RDONLY, so the FIFO always has a reader: while containerd is away
 * (restart) writes fill the FIFO and then apply back-pressure instead of failing with EPIPE.
 * A blocking open would park a threadpool thread, so we invert the order: O_RDONLY|O_NONBLOCK
 * succeeds at once, and then O_WRONLY|O_NONBLOCK succeeds because a reader (ours) exists.
 * Same "shim holds a reader" property; output may flow into the FIFO buffer before containerd's
 * reader attaches, which it then reads.
 */
export async function openOutputFifo(path: string): Promise<OutputFifo> {
  const keepReaderFd = openNonBlocking(path, O_RDONLY);
  let writerFd: number;
  try {
    writerFd = openNonBlocking(path, O_WRONLY);
  } catch (err) {
    fs.closeSync(keepReaderFd);
    throw err;
  }
  return { writer: socketOnFd(writerFd, 'write'), keepReaderFd };
}

/** An input FIFO (stdin) with the shim's keep-alive writer. */
export interface InputFifo {
  reader: net.Socket;
  /** Keep-alive writer: the reader sees EOF only after this and every client writer closed (CloseIO). */
  keepAliveFd: number;
}

/**
 * Opens the stdin FIFO. Read end first (O_NONBLOCK: returns at once even with no writer), then the
 * keep-alive writer (succeeds since a reader exists), and only then start reading: a non-blocking
 * read on a FIFO without any writer returns 0, which would look like end-of-stream.
 */
export async function openInputFifo(path: string): Promise<InputFifo> {
  const readerFd = openNonBlocking(path, O_RDONLY);
  let keepAliveFd: number;
  try {
    keepAliveFd = openNonBlocking(path, O_WRONLY);
  } catch (err) {
    fs.closeSync(readerFd);
    throw err;
  }
  return { reader: socketOnFd(readerFd, 'read'), keepAliveFd };
}

/**
 * open(2) with O_NONBLOCK, called synchronously: on a FIFO it returns at once (or fails with ENXIO),
 * so a threadpool round trip would only add latency to every Create and Exec.
 */
function openNonBlocking(path: string, flags: number): number {
  return fs.openSync(path, flags | O_NONBLOCK);
}

/** Opens a non-FIFO output path (regular file, char device) for appending; must exist. */
export async function openOutputFile(path: string): Promise<fs.WriteStream> {
  const fd = await openAsync(path, O_WRONLY | O_APPEND);
  return fs.createWriteStream('', { fd, autoClose: true });
}

/** isFifo without a threadpool trip, for paths known to be local (containerd's FIFO directory). */
export function isFifoSync(path: string): boolean {
  try {
    return fs.statSync(path).isFIFO();
  } catch (err) {
    return missingIsNotFifo(err);
  }
}

export async function isFifo(path: string): Promise<boolean> {
  try {
    return (await fs.promises.stat(path)).isFIFO();
  } catch (err) {
    return missingIsNotFifo(err);
  }
}

/** A path that does not exist is simply not a FIFO; any other stat failure is the caller's. */
function missingIsNotFifo(err: unknown): false {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
  throw err;
}

/**
 * Wraps a pipe or FIFO fd as a one-directional net.Socket. libuv makes it O_NONBLOCK (only this
 * open file description: the container's pipe end is a separate one and stays blocking).
 * The socket owns the fd from now on: destroying it closes the fd.
 */
export function socketOnFd(fd: number, direction: 'read' | 'write'): net.Socket {
  return new net.Socket({ fd, readable: direction === 'read', writable: direction === 'write', allowHalfOpen: true });
}

interface PipeHandle {
  open(fd: number): number;
}
interface PipeWrapBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

/**
 * Wraps a pty master fd as a duplex net.Socket. net.Socket({fd}) refuses ttys, and a tty.ReadStream
 * would use libuv's TTY handle, which falls back to blocking writes for a pty master (a container
 * that does not read its stdin would then stall the event loop). A libuv pipe handle works on any
 * pollable fd; this is what node-pty does too.
 */
export function socketOnPtyMaster(fd: number): net.Socket {
  const binding = (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const rc = handle.open(fd);
  if (rc !== 0) throw new Error(`cannot wrap pty master fd ${fd}: libuv error ${rc}`);
  return new net.Socket({ handle, readable: true, writable: true, allowHalfOpen: true } as net.SocketConstructorOpts);
}

/** Destroys a socket and resolves once libuv closed its fd. */
export function destroyAndWait(sock: net.Socket | fs.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (sock.closed) return resolve();
    sock.once('close', () => resolve());
    sock.destroy();
  });
}

export function closeFdQuietly(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    fs.closeSync(fd);
  } catch {
    // already closed: nothing left to release
  }
}
