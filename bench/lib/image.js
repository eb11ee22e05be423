// @ts-check
'use strict';
/**
 * The benchmark image: a one-layer OCI archive holding the host's static busybox, so a run needs
 * no registry or network. Built fresh into the run's temp dir; it is small enough (~1 MB) that
 * caching it would save nothing measurable.
 */
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { gzipSync } = require('node:zlib');
const { runChecked } = require('./proc');

const IMAGE_NAME = 'docker.io/tshim/bench';
const IMAGE_TAG = 'busybox';
const IMAGE_REF = `${IMAGE_NAME}:${IMAGE_TAG}`;
const BUSYBOX = '/bin/busybox';
/** The only commands the benchmark runs inside containers. */
const APPLETS = ['sh', 'true', 'sleep', 'dd', 'cat'];

const OCI_ARCH = /** @type {Record<string, string>} */ ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' });

/**
 * Debian's dynamic `busybox` package also installs /bin/busybox; that one cannot run in a rootfs
 * without libc, so only an ELF without a PT_INTERP header is accepted.
 * @param {Buffer} b
 */
function isStaticElf(b) {
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length || b.readUInt32LE(off) === PT_INTERP) return false;
  }
  return true;
}

/** @param {Buffer} data */
const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/**
 * @param {string} cwd
 * @param {string} out
 * @param {string[]} members
 */
async function reproducibleTar(cwd, out, members) {
  await runChecked('tar', ['--create', '--file', out, '--format=gnu', '--sort=name', '--owner=0', '--group=0',
    '--numeric-owner', '--mtime=@0', '-C', cwd, ...members]);
}

/**
 * @typedef {object} ImageVariant
 * @property {string} tag imported as `${IMAGE_NAME}:<tag>`
 * @property {string[]} [entrypoint] OCI config Entrypoint (none by default)
 */

/** The CRI phases' sandbox image: `sleep infinity` as entrypoint, like a pause binary. */
const PAUSE_VARIANT = { tag: 'pause', entrypoint: ['/bin/busybox', 'sleep', 'infinity'] };

/**
 * Writes the OCI archive under `workDir` and returns its path.
 * @param {string} workDir
 * @param {ImageVariant} [variant] default: the busybox image, tag IMAGE_TAG, no entrypoint
 * @returns {Promise<string>}
 */
async function buildImageArchive(workDir, variant = { tag: IMAGE_TAG }) {
  const busybox = fs.readFileSync(BUSYBOX);
  if (!isStaticElf(busybox)) throw new Error(`${BUSYBOX} is not a static 64-bit little-endian ELF; install busybox-static`);
  const arch = OCI_ARCH[process.arch];
  if (!arch) throw new Error(`no OCI architecture name for node arch ${process.arch}`);

  const rootfs = path.join(workDir, 'rootfs');
  for (const d of ['bin', 'dev', 'etc', 'proc', 'sys', 'tmp']) fs.mkdirSync(path.join(rootfs, d), { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(rootfs, 'bin/busybox'), busybox, { mode: 0o755 });
  for (const applet of APPLETS) fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  const layerTar = path.join(workDir, 'layer.tar');
  await reproducibleTar(rootfs, layerTar, ['.']);
  const layerRaw = fs.readFileSync(layerTar);

  const oci = path.join(workDir, 'oci');
  fs.mkdirSync(path.join(oci, 'blobs', 'sha256'), { recursive: true });
  /**
   * @param {string} mediaType
   * @param {Buffer} data
   */
  const blob = (mediaType, data) => {
    const hex = sha256(data);
    fs.writeFileSync(path.join(oci, 'blobs', 'sha256', hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layer = blob('application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(layerRaw));
  const config = blob('application/vnd.oci.image.config.v1+json', Buffer.from(JSON.stringify({
    architecture: arch,
    os: 'linux',
    config: { Env: ['PATH=/bin'], ...(variant.entrypoint ? { Entrypoint: variant.entrypoint, Cmd: [] } : { Cmd: ['sh'] }), WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerRaw)}`] },
  })));
  const manifest = blob('application/vnd.oci.image.manifest.v1+json', Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config,
    layers: [layer],
  })));
  fs.writeFileSync(path.join(oci, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(path.join(oci, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    // A bare tag here plus `ctr images import --base-name` registers exactly one image, IMAGE_REF.
    manifests: [{ ...manifest, platform: { architecture: arch, os: 'linux' }, annotations: { 'org.opencontainers.image.ref.name': variant.tag } }],
  }));
  const archive = path.join(workDir, 'image.tar');
  await reproducibleTar(oci, archive, ['oci-layout', 'index.json', 'blobs']);
  return archive;
}

/**
 * Builds the archive, imports it into the private containerd and returns the reference to run.
 * @param {import('./containerd').Containerd} cd
 * @param {ImageVariant} [variant]
 * @returns {Promise<string>}
 */
async function importBenchImage(cd, variant = { tag: IMAGE_TAG }) {
  const ref = `${IMAGE_NAME}:${variant.tag}`;
  const work = path.join(cd.dir, `image-${variant.tag}`);
  fs.mkdirSync(work);
  const archive = await buildImageArchive(work, variant);
  await cd.ctr(['images', 'import', '--base-name', IMAGE_NAME, archive], 120_000);
  const listed = (await cd.ctr(['images', 'ls', '-q'])).stdout.toString('utf8').split('\n');
  if (!listed.includes(ref)) throw new Error(`import did not register ${ref}; images: ${listed.join(' ')}`);
  fs.rmSync(work, { recursive: true, force: true });
  return ref;
}

module.exports = { importBenchImage, buildImageArchive, isStaticElf, IMAGE_REF, IMAGE_NAME, PAUSE_VARIANT };
