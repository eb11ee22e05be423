// @ts-check
'use strict';
/**
 * The CRI part of the benchmark: a CRI-enabled private containerd (containerd.js with `cri`),
 * handlers `runc` (Debian's containerd-shim-runc-v2) and `tshim` (`io.containerd.tshim.v2`, options
 * through runtimeoptions ConfigPath, as test/e2e/fixtures/cri-bed.ts registers it), CNI bridge +
 * host-local on a private bridge and a 10.199.X.0/24 claimed by subnet.js (shared
 * with the e2e suites, so parallel runs never pick the same one), and a minimal unary CRI client
 * over grpc-js using proto/k8s.io's runtime.v1 subset.
 */
const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');
const { delay, runTimed } = require('./proc');
const { claimSubnet } = require('./subnet');

const CNI_BIN_DIR = '/usr/lib/cni';

/** @param {string} repoRoot */
const criProto = (repoRoot) => path.join(repoRoot, 'proto', 'k8s.io', 'cri-api', 'pkg', 'apis', 'runtime', 'v1', 'api.proto');

/**
 * @typedef {object} CriSetup
 * @property {(dir: string) => string} config the `cri` option for startContainerd
 * @property {string} bridge
 * @property {() => Promise<string[]>} cleanup deletes the bridge, releases the subnet
 */

/**
 * @param {string} repoRoot
 * @param {string} sandboxImage
 * @returns {Promise<CriSetup>}
 */
async function prepareCri(repoRoot, sandboxImage) {
  for (const bin of ['bridge', 'host-local', 'loopback']) {
    if (!fs.existsSync(path.join(CNI_BIN_DIR, bin))) throw new Error(`${CNI_BIN_DIR}/${bin} is missing: apt-get install containernetworking-plugins`);
  }
  const tag = randomBytes(3).toString('hex');
  const bridge = `tsbcri${tag}`;
  const claim = claimSubnet();
  /** @param {string} s */
  const q = (s) => JSON.stringify(s);
  return {
    bridge,
    config(dir) {
      const conf = path.join(dir, 'cni', 'net.d');
      fs.mkdirSync(conf, { recursive: true });
      fs.writeFileSync(path.join(conf, '10-bench.conflist'), JSON.stringify({
        cniVersion: '1.0.0',
        name: `tshim-bench-${tag}`,
        plugins: [{
          type: 'bridge', bridge, isGateway: false, ipMasq: false,
          ipam: { type: 'host-local', ranges: [[{ subnet: claim.subnet }]], dataDir: path.join(dir, 'cni', 'ipam') },
        }],
      }));
      const tshimOptions = path.join(dir, 'tshim-options.toml');
      fs.writeFileSync(tshimOptions, `Root = ${q(path.join(dir, 'runc', 'tshim'))}\n`);
      return `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(sandboxImage)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(CNI_BIN_DIR)}
    conf_dir = ${q(conf)}
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = ${q(path.join(dir, 'runc', 'runc'))}
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tshim]
  runtime_type = "io.containerd.tshim.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tshim.options]
    TypeUrl = "containerd.runc.v1.Options"
    ConfigPath = ${q(tshimOptions)}
`;
    },
    async cleanup() {
      /** @type {string[]} */
      const problems = [];
      const shown = await runTimed('ip', ['link', 'show', bridge], { timeoutMs: 10_000 });
      if (shown.code === 0) {
        const del = await runTimed('ip', ['link', 'delete', bridge], { timeoutMs: 10_000 });
        if (del.code !== 0) problems.push(`deleting bridge ${bridge}: ${del.stderr.trim()}`);
      }
      claim.release();
      return problems;
    },
  };
}

/** Unary CRI calls with plain-object requests and responses (protobufjs camelCase field names). */
class CriClient {
  /**
   * @param {string} repoRoot
   * @param {string} address containerd's socket path
   */
  constructor(repoRoot, address) {
    this.root = new protobuf.Root().loadSync(criProto(repoRoot));
    this.root.resolveAll();
    this.client = new grpc.Client(`unix://${address}`, grpc.credentials.createInsecure());
  }

  close() {
    this.client.close();
  }

  /**
   * @param {string} method `RuntimeService/RunPodSandbox`, `ImageService/ImageStatus`, ...
   * @param {Record<string, unknown>} request
   * @param {number} [timeoutMs]
   * @returns {Promise<Record<string, any>>}
   */
  call(method, request, timeoutMs = 60_000) {
    const [service, name] = method.split('/');
    const m = this.root.lookupService(`runtime.v1.${service}`).methods[name ?? ''];
    if (!m) return Promise.reject(new Error(`no CRI method ${method}`));
    m.resolve();
    const req = /** @type {protobuf.Type} */ (m.resolvedRequestType);
    const res = /** @type {protobuf.Type} */ (m.resolvedResponseType);
    const bytes = Buffer.from(req.encode(req.fromObject(request)).finish());
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(`/runtime.v1.${method}`, (/** @type {Buffer} */ b) => b, (/** @type {Buffer} */ b) => b, bytes,
        new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, reply) => {
          if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`));
          else resolve(res.toObject(res.decode(reply ?? Buffer.alloc(0)), { longs: Number, enums: String, defaults: true }));
        });
    });
  }

  /** Until Status says RuntimeReady and NetworkReady. */
  async waitReady(timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const st = await this.call('RuntimeService/Status', {});
        const conds = /** @type {{ type: string, status: boolean }[]} */ (st.status?.conditions ?? []);
        last = JSON.stringify(conds);
        if (['RuntimeReady', 'NetworkReady'].every((t) => conds.some((c) => c.type === t && c.status))) return;
      } catch (err) {
        last = String(err);
      }
      if (Date.now() > deadline) throw new Error(`CRI not ready after ${timeoutMs} ms: ${last}`);
      await delay(50);
    }
  }

  /** @param {string} image */
  async waitImage(image, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.call('ImageService/ImageStatus', { image: { image } });
      if (st.image) return;
      if (Date.now() > deadline) throw new Error(`CRI never listed image ${image}`);
      await delay(50);
    }
  }
}

/**
 * A pod config with unique metadata; `logDir` is where CRI writes container logs.
 * @param {string} name
 * @param {string} logDir
 */
function podConfig(name, logDir) {
  const uid = randomBytes(8).toString('hex');
  return {
    metadata: { name, uid, namespace: 'tshim-bench', attempt: 0 },
    hostname: name,
    logDirectory: path.join(logDir, uid),
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
  };
}

/**
 * @param {string} name
 * @param {string} image
 * @param {string[]} command
 */
const containerConfig = (name, image, command) => ({ metadata: { name, attempt: 0 }, image: { image }, command, logPath: `${name}.log` });

module.exports = { prepareCri, CriClient, podConfig, containerConfig };
