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

export type Command =
  | { kind: 'start'; flags: ShimFlags }
  | { kind: 'delete'; flags: ShimFlags }
  | { kind: 'serve'; flags: ShimFlags }
  | { kind: 'spare'; flags: ShimFlags }
  | { kind: 'version' }
  | { kind: 'info'; flags: ShimFlags }
  /** tshim's own: hand running daemons over to the binary now installed (README, Upgrading) */
  | { kind: 'upgrade'; flags: ShimFlags; socketDir: string }
  /** run by a daemon being upgraded, with the new build: can it take over this state? */
  | { kind: 'upgrade-check'; file: string }
  | { kind: 'usage'; error?: string };

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

const BOOL_FLAGS = new Set(['debug', 'v', 'version', 'info', 'h', 'help']);

export const USAGE = `Usage: containerd-shim-tshim-v2 [flags] [start|delete]

containerd runtime v2 shim (runtime type io.containerd.tshim.v2). containerd runs it;
people rarely do.

Flags:
  -namespace string       namespace that owns the shim
  -id string              id of the task
  -address string         grpc address back to main containerd
  -publish-binary string  path to publish binary (used for publishing events)
  -bundle string          path to the bundle if not workdir
  -socket string          socket path to serve
  -debug                  enable debug output in logs
  -info                   print runtime info (protobuf) and exit
  -v                      show the shim version and exit
  -socket-dir string      upgrade: where shim sockets are (default /run/containerd/s)


Actions:
  start    start a shim daemon and print its address
  delete   clean up after a shim that is gone; prints a DeleteResponse
  (none)   serve the task API (how 'start' launches the daemon)
  upgrade  hand every running tshim daemon of -address (or the one at -socket) over, in place,
           to the binary now installed; prints one line per daemon
`;

function emptyFlags(): ShimFlags {
  return { namespace: '', id: '', address: '', publishBinary: '', bundle: '', socket: '', spare: '', debug: false };
}

export function parseArgs(argv: readonly string[]): Command {
  const flags = emptyFlags();
  let action: string | undefined;
  let wantVersion = false;
  let wantInfo = false;
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
      else return { kind: 'usage' };
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
