// Private binding for the one syscall src/shim/sys.ts lacks: fcntl(F_DUPFD_CLOEXEC).
// TODO: move into sys.ts (asked its owner) and import it from there.
import type * as Koffi from 'koffi';
import { SysError } from '../../shim/sys';

const F_DUPFD_CLOEXEC = 1030;
let fcntlInt: ((fd: number, cmd: number, arg: number) => number) | undefined;
let koffiErrno: (() => number) | undefined;

/** A close-on-exec duplicate of fd (same open file description). */
export function dupCloexec(fd: number): number {
  if (!fcntlInt) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- koffi loads on first use (tens of ms)
    const koffi = require('koffi') as typeof Koffi;
    fcntlInt = koffi.load('libc.so.6').func('fcntl', 'int', ['int', 'int', 'int']) as unknown as typeof fcntlInt;
    koffiErrno = () => koffi.errno();
  }
  const r = fcntlInt!(fd, F_DUPFD_CLOEXEC, 0);
  if (r === -1) throw new SysError('fcntl(F_DUPFD_CLOEXEC)', koffiErrno!(), `fd ${fd}`);
  return r;
}
