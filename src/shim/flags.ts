// Go `flag`-style command line parsing, as containerd invokes shims:
//   <shim> -namespace ns -address /run/containerd/containerd.sock -id x [-debug] start
// Single or double dash, `-flag value` or `-flag=value`, booleans without a value; parsing stops at
// the first non-flag argument, which is the action.

export interface ShimFlags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  info: boolean;
  /** -h / -help: print the usage and exit 0 (Go's flag package does the same). */
  help: boolean;
  debugSocket: string;
  /** Ignored: room in argv for the process title a spare sets when it becomes a daemon. */
  titleSpace: string;
  action: string; // '' = daemon mode
  rest: string[];
}

/** The flags' fields of type V (so that a table entry can be written without a cast). */
type FieldsOf<V> = { [K in keyof ShimFlags]-?: ShimFlags[K] extends V ? K : never }[keyof ShimFlags];

const STRING_FLAGS: Record<string, FieldsOf<string>> = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
  'debug-socket': 'debugSocket',
  'title-space': 'titleSpace',
};
const BOOL_FLAGS: Record<string, FieldsOf<boolean>> = {
  debug: 'debug',
  v: 'version',
  version: 'version',
  info: 'info',
  h: 'help',
  help: 'help',
};

export class FlagError extends Error {}

export function parseFlags(argv: string[]): ShimFlags {
  const flags: ShimFlags = {
    namespace: '',
    id: '',
    address: '',
    publishBinary: '',
    bundle: '',
    socket: '',
    debug: false,
    version: false,
    info: false,
    help: false,
    debugSocket: '',
    titleSpace: '',
    action: '',
    rest: [],
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name in BOOL_FLAGS) {
      const key = BOOL_FLAGS[name];
      flags[key] = inline === undefined ? true : !/^(0|f|false)$/i.test(inline);
    } else if (name in STRING_FLAGS) {
      let value = inline;
      if (value === undefined) {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
        value = argv[++i];
      }
      flags[STRING_FLAGS[name]] = value;
    } else {
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
  }
  flags.action = argv[i] ?? '';
  flags.rest = argv.slice(i + 1);
  return flags;
}
