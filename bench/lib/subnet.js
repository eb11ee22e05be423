// @ts-check
'use strict';
/**
 * Claims a free 10.199.X.0/24 for a private CNI bridge, shared by the bench's CRI rows and the e2e
 * CRI test bed so that runs in parallel (and other users of the subnet) never pick the same one: an
 * O_EXCL file per third octet under /tmp/tshim-cri-subnets holds the owner's pid (a claim whose
 * owner is gone is stale and removed), and a /24 the kernel already routes is skipped.
 * Test-only addresses: never routed off-host (no gateway on the bridge, no masquerading).
 */
const { execFileSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const SUBNET_CLAIMS = '/tmp/tshim-cri-subnets';
const SUBNET_PREFIX = '10.199';

/** @param {number} pid */
function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return /** @type {NodeJS.ErrnoException} */ (err).code === 'EPERM';
  }
}

/**
 * Routes the kernel already has into `cidr` or within it (another bridge, another run), the default route aside.
 * @param {string} cidr
 */
function subnetInUse(cidr) {
  const routes = (/** @type {string} */ selector) =>
    execFileSync('ip', ['-4', '-o', 'route', 'show', selector, cidr], { encoding: 'utf8', timeout: 10_000 });
  return routes('root').trim() !== '' || routes('match').split('\n').some((l) => l.trim() !== '' && !l.startsWith('default'));
}

/**
 * @returns {{ subnet: string, release: () => void }}
 */
function claimSubnet() {
  fs.mkdirSync(SUBNET_CLAIMS, { recursive: true });
  const start = randomBytes(1)[0] ?? 0;
  for (let i = 0; i < 256; i++) {
    const octet = (start + i) % 256;
    const claim = path.join(SUBNET_CLAIMS, String(octet));
    try {
      fs.writeFileSync(claim, String(process.pid), { flag: 'wx' });
    } catch (err) {
      if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'EEXIST') throw err;
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(claim, 'utf8'));
      } catch {
        // released meanwhile
      }
      // stale: removed now, taken by a later round (or run)
      if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) fs.rmSync(claim, { force: true });
      continue;
    }
    const subnet = `${SUBNET_PREFIX}.${octet}.0/24`;
    if (subnetInUse(subnet)) {
      fs.rmSync(claim, { force: true });
      continue;
    }
    return { subnet, release: () => fs.rmSync(claim, { force: true }) };
  }
  throw new Error(`no free ${SUBNET_PREFIX}.X.0/24 left to claim under ${SUBNET_CLAIMS}`);
}

module.exports = { claimSubnet };
