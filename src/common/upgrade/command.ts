/**
 * `containerd-shim-tshim-v2 upgrade`: finds the running tshim daemons of one containerd and asks
 * each, over `tshim.v1.Control` on its own socket, to hand itself over to the binary now
 * installed. One line per daemon on stdout; exit status 0 when every one was upgraded.
 *
 * Finding them: every socket in the shim socket directory (containerd's fixed /run/containerd/s,
 * or -socket-dir) is asked `Control/Info`. Only tshim daemons answer it (a runc shim answers
 * "service not found", a spare's socket is skipped by name, a stale socket refuses the
 * connection), and each answer names the containerd address and namespace the daemon serves, so
 * the filter is exact whatever the process table or the bundles look like. `-socket PATH` names
 * one daemon instead.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ShimFlags } from '../cli';
import { DEFAULT_SOCKET_DIR } from '../bootstrap';
import { codec } from '../proto';
import { TtrpcClient } from '../ttrpc/client';
import { CONTROL_SERVICE, type UpgradeResult } from './handover';

const PROBE_TIMEOUT_MS = 3_000;
const UPGRADE_TIMEOUT_MS = 120_000;

interface Info {
  pid: number;
  version: string;
  address: string;
  namespace: string;
  containers: string[];
}

async function call(socket: string, method: string, payload: Buffer, timeoutMs: number): Promise<Buffer> {
  const client = await TtrpcClient.connect(socket, { timeoutMs });
  try {
    return await client.call(CONTROL_SERVICE, method, payload, { timeoutMs });
  } finally {
    client.close();
  }
}

export async function probe(socket: string): Promise<Info | undefined> {
  try {
    const reply = await call(socket, 'Info', codec<object>('tshim.v1.InfoRequest').encode({}), PROBE_TIMEOUT_MS);
    return codec<Info>('tshim.v1.InfoResponse').decode(reply);
  } catch {
    return undefined; // not a tshim daemon, or not answering
  }
}

/** The tshim daemons serving containerd `address` (and `namespace`, when given). */
export async function findDaemons(socketDir: string, address: string, namespace: string): Promise<Array<{ socket: string; info: Info }>> {
  let names: string[];
  try {
    names = fs.readdirSync(socketDir);
  } catch {
    return [];
  }
  const found: Array<{ socket: string; info: Info }> = [];
  for (const name of names.sort()) {
    if (name.startsWith('tshim-spare-')) continue;
    const socket = path.join(socketDir, name);
    try {
      if (!fs.statSync(socket).isSocket()) continue;
    } catch {
      continue;
    }
    const info = await probe(socket);
    if (!info || info.address !== address) continue;
    if (namespace && info.namespace !== namespace) continue;
    found.push({ socket, info });
  }
  return found;
}

export async function upgradeOne(socket: string): Promise<UpgradeResult> {
  const reply = await call(
    socket,
    'Upgrade',
    codec<object>('tshim.v1.UpgradeRequest').encode({ launcher: '', quiesceTimeoutMs: 0 }),
    UPGRADE_TIMEOUT_MS,
  );
  return codec<UpgradeResult>('tshim.v1.UpgradeResponse').decode(reply);
}

export async function runUpgradeCommand(
  flags: ShimFlags,
  socketDir: string,
  stdout: NodeJS.WritableStream,
  stderr: NodeJS.WritableStream,
): Promise<number> {
  let targets: Array<{ socket: string; info: Info | undefined }>;
  if (flags.socket) {
    const socket = flags.socket.replace(/^unix:\/\//, '');
    targets = [{ socket, info: await probe(socket) }];
  } else if (flags.address) {
    targets = await findDaemons(socketDir || DEFAULT_SOCKET_DIR, flags.address, flags.namespace);
  } else {
    stderr.write('upgrade: -address (containerd\'s socket, to upgrade all its tshim daemons) or -socket (one daemon) is required\n');
    return 2;
  }
  if (targets.length === 0) {
    stderr.write(`upgrade: no running tshim daemon found for ${flags.address || flags.socket}\n`);
    return 0;
  }
  let failures = 0;
  for (const { socket, info } of targets) {
    let r: UpgradeResult;
    try {
      r = await upgradeOne(socket);
    } catch (err) {
      failures++;
      const reason = err instanceof Error ? err.message : String(err);
      stdout.write(`failed pid=${info?.pid ?? 0} socket=${socket} version=${info?.version ?? 'unknown'} reason=${JSON.stringify(reason)}\n`);
      continue;
    }
    if (r.upgraded) {
      stdout.write(
        `upgraded pid=${r.pid} socket=${socket} from=${r.oldVersion} to=${r.newVersion} pause_ms=${(Number(r.pauseMicros) / 1000).toFixed(1)} containers=${r.containers} fds=${r.fds}\n`,
      );
    } else {
      failures++;
      stdout.write(`failed pid=${r.pid} socket=${socket} version=${r.oldVersion} reason=${JSON.stringify(r.message)}\n`);
    }
  }
  return failures === 0 ? 0 : 1;
}
