/**
 * NODE_EXTRA_CA_CERTS in containerd's environment (src/common/node-env.ts): node loads the bundle
 * while it starts, 50 ms of every node process, so the daemons and spares tshim starts get it
 * parked; the runtime they run still sees containerd's value.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { rootCertificates } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARKED_CA_CERTS } from '../../src/common/node-env';
import { removeContainer, shimProcesses, spareProcesses, startContainerd, uniqueId, type Containerd } from './harness';
import { importBusyboxImage } from './image';
import { runtimeWrapper, scratchDir, until } from './fixtures/suite';

const RUNTIME = 'io.containerd.tshim.v2';

async function initialEnv(pid: number): Promise<Map<string, string>> {
  const raw = await fs.readFile(`/proc/${pid}/environ`, 'utf8');
  return new Map(raw.split('\0').filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

describe("NODE_EXTRA_CA_CERTS in containerd's environment", () => {
  let cd: Containerd;
  let image: string;
  let bundleFile: string;

  beforeAll(async () => {
    const dir = await fs.mkdtemp('/tmp/tse-ca-');
    bundleFile = path.join(dir, 'ca.pem');
    await fs.writeFile(bundleFile, rootCertificates.slice(0, 3).join('\n'));
    cd = await startContainerd({ env: { NODE_EXTRA_CA_CERTS: bundleFile, TSHIM_SPARE: '1' } }); // the spare's path is under test too
    image = await importBusyboxImage(cd);
  });
  afterAll(async () => {
    const problems = await cd.stop();
    await fs.rm(path.dirname(bundleFile), { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`teardown:\n${problems.join('\n')}`);
  });

  it('reaches the runtime, while the node daemons and spares tshim starts never load it', async () => {
    const ids = [uniqueId('ca-a'), uniqueId('ca-b')];
    const dir = await scratchDir(cd, ids[0]!);
    const calls = path.join(dir, 'calls');
    const config = await runtimeWrapper(dir, 'runc-env', `echo "[$NODE_EXTRA_CA_CERTS] [$${PARKED_CA_CERTS}]" >> ${calls}`);
    try {
      // the first daemon is launched by `start`; the second container's is the spare it left,
      // which takes the second start's environment in place of its own (the variable unparked)
      const run = (id: string): Promise<unknown> => cd.ctr(['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', config, image, id, 'sleep', '1000']);
      await run(ids[0]!);
      const spare = await until('the spare the first start left', async () => (await spareProcesses(cd))[0]);
      await run(ids[1]!);
      expect((await shimProcesses(cd, ids[1]!)).map((p) => p.pid)).toEqual([spare.pid]);
      const daemons = [...(await shimProcesses(cd)), ...(await spareProcesses(cd))];
      expect(daemons.length).toBeGreaterThanOrEqual(2);
      for (const daemon of daemons) {
        const env = await initialEnv(daemon.pid);
        expect(env.has('NODE_EXTRA_CA_CERTS'), `pid ${daemon.pid} ${daemon.cmdline.join(' ')}`).toBe(false);
        expect(env.get(PARKED_CA_CERTS)).toBe(bundleFile);
      }
      const lines = (await fs.readFile(calls, 'utf8')).trim().split('\n');
      expect(lines.length).toBeGreaterThanOrEqual(4); // create and start of each
      expect(new Set(lines)).toEqual(new Set([`[${bundleFile}] []`]));
    } finally {
      for (const id of ids) await removeContainer(cd, id);
    }
  });
});
