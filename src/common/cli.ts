/**
 * argv → one command. Pure: no I/O, no globals, so the contract containerd relies on (Go `flag`
 * syntax: single or double dash, `-flag value` or `-flag=value`, the first bare word is the action)
 * is unit-tested in isolation.
 */

export interface ShimFlags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  /** tshim's own: the socket of an idle spare daemon to run as (see spare.ts) */
  spare: string;
  debug: boolean;
}

/**
 * The flags a daemon is launched with, as containerd would see them in its argv (a spare that is
 * adopted shows them as its title): one builder for every launch, so they never drift apart.
 */
export function daemonFlags(f: Pick<ShimFlags, 'namespace' | 'id' | 'address' | 'publishBinary' | 'debug'>): string[] {
  const args = ['-namespace', f.namespace, '-id', f.id, '-address', f.address];
  if (f.publishBinary) args.push('-publish-binary', f.publishBinary);
  if (f.debug) args.push('-debug');
  return args;
}

export type Command =
  | { kind: 'start'; flags: ShimFlags }
  | { kind: 'delete'; flags: ShimFlags }
  | { kind: 'serve'; flags: ShimFlags }
  | { kind: 'spare'; flags: ShimFlags }
  | { kind: 'version' }
  | { kind: 'info'; flags: ShimFlags }
  | { kind: 'help' }
  /** tshim's own: hand running daemons over to the binary now installed (README, Upgrading) */
  | { kind: 'upgrade'; flags: ShimFlags; socketDir: string }
  /** run by a daemon being upgraded, with the new build: can it take over this state? */
  | { kind: 'upgrade-check'; file: string }
  | { kind: 'usage'; error: string };

const STRING_FLAGS: Readonly<Record<string, keyof ShimFlags>> = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
  spare: 'spare',
};

/**
 * Accepted and ignored: containerd 2.x passes a debug socket; tshim's `-title-room` only makes a
 * spare's argv long enough for the title it takes on adoption.
 */
const IGNORED_STRING_FLAGS = new Set(['debug-socket', 'title-room']);
/** tshim's own flags of the upgrade actions, kept out of ShimFlags */
const UPGRADE_STRING_FLAGS = new Set(['socket-dir', 'upgrade-check']);

/** Every string flag the parser accepts (for the help test). */
export const STRING_OPTION_FLAGS: readonly string[] = [
  ...Object.keys(STRING_FLAGS),
  ...IGNORED_STRING_FLAGS,
  ...UPGRADE_STRING_FLAGS,
];

const BOOL_FLAGS = new Set(['debug', 'v', 'version', 'info', 'h', 'help']);

export const SHIM_BINARY = 'containerd-shim-tshim-v2';

/** `--help`: on stdout, exit 0. Misuse gets one line on stderr (misuseLine) and exit 2. */
export const USAGE = `Usage: containerd-shim-tshim-v2 [flags] [start|delete|upgrade]

containerd runtime v2 shim (runtime type io.containerd.tshim.v2). containerd runs it;
people rarely do. README.md and docs/configuration.md tell how to register it.

Actions:
  start    start (or reuse) a shim daemon for the task, print its address and exit
  delete   clean up after a shim that is gone; prints a DeleteResponse (protobuf)
  (none)   serve the Task API on fd 3 (how 'start' launches the daemon)
  upgrade  hand every running tshim daemon of -address (or the one at -socket) over, in place,
           to the binary now installed; prints one line per daemon (README, Upgrading)

Flags (Go flag syntax: -flag value, -flag=value, --flag):
  -namespace string       namespace that owns the shim
  -id string              id of the task
  -address string         grpc address back to main containerd
  -publish-binary string  path to publish binary (used for publishing events)
  -bundle string          path to the bundle if not workdir
  -socket string          socket path to serve
  -debug                  enable debug output in logs
  -debug-socket string    accepted and ignored (containerd 2.x)
  -info                   print runtime info (containerd.types.RuntimeInfo, protobuf) and exit
  -v, -version            show the shim version and exit
  -h, -help               show this help and exit
  -spare string           internal: run as an idle spare daemon on this socket
  -title-room string      internal: room in a spare's argv for its title
  -socket-dir string      upgrade: where shim sockets are (default /run/containerd/s)
  -upgrade-check string   internal: run by a daemon being upgraded, with the new build

Environment:
  TSHIM_PROTOCOL=grpc             serve gRPC and print a JSON bootstrap for containerd 2.x
                                  (default: ttrpc and a plain unix:// address, any containerd)
  TSHIM_SPARE=0                   never start or adopt a spare daemon (default: on; also the
                                  runtime option NoSpareDaemon = true)
  TSHIM_SPARE_IDLE_SECONDS=N      an idle spare exits after N seconds (default 600)
  TSHIM_SPARE_CHECK_SECONDS=N     an idle spare checks every N seconds that containerd is
                                  still there (default 10)
  TSHIM_SHIM_GROUP=POLICY         which containers share a daemon: container, pod (default:
                                  a CRI pod's), namespace (all of a namespace); the runtime
                                  option ShimGroup wins
  TSHIM_RESERVATION_SECONDS=N     how long a shared daemon waits for a container a start
                                  reserved it for (default 60)
  TSHIM_DAEMON_NODE_FLAGS="…"     node flags for daemons and spares (default
                                  --max-semi-space-size=1; empty: none)
  UV_THREADPOOL_SIZE=N            Windows: libuv threads of the daemon (default 64; blocked
                                  HCS stdio reads each hold one)
  TSHIM_UPGRADE_DIR=DIR           upgrade: where hand-over state files go (default /run/tshim/upgrade)
  TTRPC_ADDRESS                   set by containerd: its ttrpc socket, where events are sent
  XDG_RUNTIME_DIR                 where temporary sockets go (default: the system temp dir)
  GRPC_ADDRESS, NAMESPACE, MAX_SHIM_VERSION, GOMAXPROCS, SCHED_CORE
                                  set by containerd 1.7/2.x; not needed (flags carry the same)

Files: the bundle's config.json, address and log (a FIFO containerd copies into its own log);
sockets under /run/containerd/s. Exit status: 0 ok, 1 the action failed, 2 misuse.
`;

/** The one line misuse gets on stderr. */
export function misuseLine(error: string): string {
  return `${SHIM_BINARY}: ${error} (run \`${SHIM_BINARY} --help\` for usage)\n`;
}

function emptyFlags(): ShimFlags {
  return { namespace: '', id: '', address: '', publishBinary: '', bundle: '', socket: '', spare: '', debug: false };
}

export function parseArgs(argv: readonly string[]): Command {
  const flags = emptyFlags();
  let action: string | undefined;
  let wantVersion = false;
  let wantInfo = false;
  let wantHelp = false;
  const upgradeFlags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (action !== undefined || !arg.startsWith('-') || arg === '-') {
      if (action !== undefined) return { kind: 'usage', error: `unexpected argument "${arg}"` };
      action = arg;
      continue;
    }
    if (arg === '--') {
      if (i + 1 < argv.length) action = argv[i + 1];
      if (i + 2 < argv.length) return { kind: 'usage', error: `unexpected argument "${argv[i + 2]}"` };
      break;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (BOOL_FLAGS.has(name)) {
      const on = inline === undefined ? true : parseBool(inline);
      if (on === undefined) return { kind: 'usage', error: `invalid boolean value "${inline}" for -${name}` };
      if (name === 'debug') flags.debug = on;
      else if (name === 'v' || name === 'version') wantVersion = on;
      else if (name === 'info') wantInfo = on;
      else if (on) wantHelp = true;
      continue;
    }
    const ignored = IGNORED_STRING_FLAGS.has(name) || UPGRADE_STRING_FLAGS.has(name);
    const key = STRING_FLAGS[name];
    if (!key && !ignored) return { kind: 'usage', error: `flag provided but not defined: -${name}` };
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) return { kind: 'usage', error: `flag needs an argument: -${name}` };
      value = argv[++i]!;
    }
    if (key) (flags[key] as string) = value;
    if (UPGRADE_STRING_FLAGS.has(name)) upgradeFlags.set(name, value);
  }
  if (wantHelp || action === 'help') return { kind: 'help' };
  const checkFile = upgradeFlags.get('upgrade-check');
  if (checkFile !== undefined) return { kind: 'upgrade-check', file: checkFile };
  if (wantVersion) return { kind: 'version' };
  if (wantInfo) return { kind: 'info', flags };
  switch (action) {
    case undefined:
      return flags.spare ? { kind: 'spare', flags } : { kind: 'serve', flags };
    case 'start':
      return { kind: 'start', flags };
    case 'delete':
      return { kind: 'delete', flags };
    case 'upgrade':
      return { kind: 'upgrade', flags, socketDir: upgradeFlags.get('socket-dir') ?? '' };
    default:
      return { kind: 'usage', error: `unknown action "${action}"` };
  }
}

function parseBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(text)) return false;
  return undefined;
}
