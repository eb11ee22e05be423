/**
 * Which containers one daemon serves (runtime option `ShimGroup`, or TSHIM_SHIM_GROUP for a whole
 * containerd): `container` (one daemon each), `pod` (the runc shim's rule: a CRI pod's or a
 * `io.containerd.runc.v2.group`'s containers share one; the default) or `namespace` (every
 * container of a containerd namespace shares one, so Node's floor is paid once per namespace).
 *
 * A shared daemon can be ending (its last container was deleted, containerd sent Shutdown) at the
 * moment another `start` finds its socket. `start` therefore reserves the daemon for its container
 * over tshim's Control service before it prints the address: the daemon then waits for that
 * Create; a daemon that already decided to end answers reserved = false, with its socket already
 * unlinked, and `start` launches a new one in its place.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, invalidArgument, ShimError } from './errors';
import { encodeReserveRequest, WireMessage } from './wire';

export type GroupPolicy = 'container' | 'pod' | 'namespace';
const POLICIES: readonly GroupPolicy[] = ['container', 'pod', 'namespace'];

/** The runtime option wins over the environment; both empty: `pod`. */
export function groupPolicy(option: string, env: NodeJS.ProcessEnv = process.env): GroupPolicy {
  const raw = (option || env['TSHIM_SHIM_GROUP'] || 'pod').trim().toLowerCase();
  if ((POLICIES as readonly string[]).includes(raw)) return raw as GroupPolicy;
  const from = option ? 'runtime option ShimGroup' : 'TSHIM_SHIM_GROUP';
  throw invalidArgument(`${from} = ${JSON.stringify(option || env['TSHIM_SHIM_GROUP'])}: expected one of ${POLICIES.join(', ')}`);
}

/**
 * The key a daemon's socket is named by. Container ids never hold a colon (containerd's identifier
 * rule), so the namespace key cannot collide with a container's.
 */
export function groupingKey(bundle: string, id: string, policy: GroupPolicy = 'pod'): string {
  if (policy === 'container') return id;
  if (policy === 'namespace') return 'tshim:namespace';
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, string>;
    };
    const a = spec.annotations ?? {};
    return a['io.containerd.runc.v2.group'] || a['io.kubernetes.cri.sandbox-id'] || id;
  } catch {
    return id;
  }
}

export const CONTROL_SERVICE = 'tshim.v1.Control';
/** How long `start` waits for a live daemon to answer Reserve. */
const RESERVE_TIMEOUT_MS = 5_000;

export type ReserveOutcome = 'reserved' | 'ending' | 'unreachable';

/**
 * Asks the daemon on `sockPath` to wait for container `id`. A daemon that does not know Reserve
 * (an older tshim) is taken as reserved, as before reservations existed.
 */
export async function reserveDaemon(sockPath: string, id: string): Promise<ReserveOutcome> {
  const { TtrpcClient } = await import('./ttrpc/client');
  let client: InstanceType<typeof TtrpcClient> | undefined;
  try {
    client = await TtrpcClient.connect(sockPath, { timeoutMs: RESERVE_TIMEOUT_MS });
    const reply = await client.call(CONTROL_SERVICE, 'Reserve', encodeReserveRequest(id), { timeoutMs: RESERVE_TIMEOUT_MS });
    return new WireMessage(Buffer.from(reply)).bool(1) ? 'reserved' : 'ending';
  } catch (err) {
    if (err instanceof ShimError && err.code === Code.Unimplemented) return 'reserved';
    return 'unreachable';
  } finally {
    client?.close();
  }
}
