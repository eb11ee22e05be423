/**
 * The e2e image: a one-layer busybox OCI archive built from the host's static busybox, so the
 * suite never needs a registry or network. The archive is cached by content under /tmp; every
 * private containerd imports it under the stable name IMAGE_REF.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { Containerd } from './harness';

const execFileAsync = promisify(execFile);

export const IMAGE_NAME = 'docker.io/tshim/busybox';
export const IMAGE_TAG = 'e2e';
export const IMAGE_REF = `${IMAGE_NAME}:${IMAGE_TAG}`;
export const BUSYBOX_PATH = '/bin/busybox';
const CACHE_DIR = '/tmp/tshim-e2e-cache';

/** Every applet a test invokes by name; a missing link shows up as "not found" inside the container. */
export const APPLETS = [
  'sh', 'cat', 'echo', 'sleep', 'ls', 'ps', 'true', 'false', 'id', 'env', 'head', 'tail', 'yes',
  'dd', 'wc', 'stty', 'tty', 'kill', 'mount', 'hostname', 'printf', 'seq', 'grep', 'test', '[',
  'uname', 'mkdir', 'rm', 'touch', 'pwd', 'readlink', 'tr', 'sed',
] as const;

/** Bumped whenever the layout below changes, so stale cached archives are not reused. */
const RECIPE_VERSION = 2;
const IMAGE_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
const EPOCH = '1970-01-01T00:00:00Z';

const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** Node's `process.arch` spelled the way OCI image configs and platform matchers spell it. */
export function ociArchitecture(nodeArch: string = process.arch): string {
  const map: Record<string, string> = {
    x64: 'amd64',
    ia32: '386',
    arm64: 'arm64',
    arm: 'arm',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
    mips: 'mips',
    mipsel: 'mipsle',
  };
  const arch = map[nodeArch];
  if (!arch) throw new Error(`no OCI architecture name for node arch ${nodeArch}`);
  return arch;
}

/**
 * True when the ELF file has no PT_INTERP program header, i.e. it runs without a dynamic loader.
 * Debian's dynamic `busybox` package also installs /bin/busybox; that one would fail in a rootfs
 * without libc, so it has to be told apart from busybox-static.
 */
export function isStaticElf(bytes: Buffer): boolean {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = bytes[4] === 2;
  const little = bytes[5] === 1;
  const u16 = (off: number): number => (little ? bytes.readUInt16LE(off) : bytes.readUInt16BE(off));
  const u32 = (off: number): number => (little ? bytes.readUInt32LE(off) : bytes.readUInt32BE(off));
  const phoff = is64
    ? Number(little ? bytes.readBigUInt64LE(0x20) : bytes.readBigUInt64BE(0x20))
    : u32(0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > bytes.length) return false;
    if (u32(off) === PT_INTERP) return false;
  }
  return true;
}

/** Returns the static busybox bytes, installing Debian's busybox-static first when needed. */
export async function ensureStaticBusybox(): Promise<Buffer> {
  const read = async (): Promise<Buffer | undefined> => {
    try {
      const bytes = await fs.readFile(BUSYBOX_PATH);
      return isStaticElf(bytes) ? bytes : undefined;
    } catch {
      return undefined;
    }
  };
  const existing = await read();
  if (existing) return existing;
  await execFileAsync('apt-get', ['install', '-y', 'busybox-static'], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    maxBuffer: 16 * 1024 * 1024,
  });
  const installed = await read();
  if (!installed) throw new Error(`${BUSYBOX_PATH} is still not a static binary after installing busybox-static`);
  return installed;
}

/**
 * Lays out a minimal busybox root filesystem in `dir` (which must not exist yet or be empty).
 * Modes are set explicitly so the result does not depend on the caller's umask.
 */
export async function makeBusyboxRootfs(dir: string, busybox?: Buffer): Promise<void> {
  const bin = busybox ?? (await ensureStaticBusybox());
  const mkdir = async (rel: string, mode: number): Promise<void> => {
    const p = path.join(dir, rel);
    await fs.mkdir(p, { recursive: true });
    await fs.chmod(p, mode);
  };
  await mkdir('.', 0o755);
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'root', 'usr', 'var']) await mkdir(d, 0o755);
  await mkdir('tmp', 0o1777);
  await fs.writeFile(path.join(dir, 'bin/busybox'), bin);
  await fs.chmod(path.join(dir, 'bin/busybox'), 0o755);
  for (const applet of APPLETS) await fs.symlink('busybox', path.join(dir, 'bin', applet));
  await fs.writeFile(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n', { mode: 0o644 });
  await fs.writeFile(path.join(dir, 'etc/group'), 'root:x:0:\n', { mode: 0o644 });
  await fs.chmod(path.join(dir, 'etc/passwd'), 0o644);
  await fs.chmod(path.join(dir, 'etc/group'), 0o644);
}

/** GNU tar with every knob that makes the archive reproducible: sorted, owned by 0:0, mtime 0. */
async function reproducibleTar(cwd: string, out: string, members: string[]): Promise<void> {
  await execFileAsync('tar', [
    '--create', '--file', out, '--format=gnu', '--sort=name',
    '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0',
    '-C', cwd, ...members,
  ]);
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function writeBlob(ociDir: string, mediaType: string, data: Buffer): Promise<Descriptor> {
  const hex = sha256(data);
  await fs.writeFile(path.join(ociDir, 'blobs', 'sha256', hex), data);
  return { mediaType, digest: `sha256:${hex}`, size: data.length };
}

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * One image built on the busybox layer: where it is imported (`name:tag`) and what its config
 * says. All variants share the layer, so importing several costs one snapshot.
 */
export interface ImageVariant {
  /** Repository, e.g. `docker.io/tshim/busybox`. */
  name: string;
  tag: string;
  /** OCI config `Entrypoint`; absent means none. */
  entrypoint?: string[];
  /** OCI config `Cmd`. */
  cmd: string[];
  /** OCI config `User` (`uid[:gid]`); absent means root. */
  user?: string;
}

/** The e2e busybox image every suite runs. */
export const BUSYBOX_IMAGE: ImageVariant = { name: IMAGE_NAME, tag: IMAGE_TAG, cmd: ['sh'] };

/**
 * A pause image for CRI sandboxes: busybox `sleep infinity` as entrypoint. As pid 1 it ignores
 * SIGTERM (no handler), and CRI stops sandboxes with SIGKILL, exactly what the real pause gets.
 */
export const PAUSE_IMAGE: ImageVariant = { name: 'docker.io/tshim/pause', tag: IMAGE_TAG, entrypoint: ['/bin/sleep', 'infinity'], cmd: [] };

/** The busybox image with a non-root image user (uid 1000, gid 1000; no passwd entry needed). */
export const NONROOT_IMAGE: ImageVariant = { name: 'docker.io/tshim/busybox-nonroot', tag: IMAGE_TAG, cmd: ['sh'], user: '1000:1000' };

/** `name:tag` of a variant. */
export const imageRef = (v: ImageVariant): string => `${v.name}:${v.tag}`;

/**
 * Builds (or reuses) the OCI image archive of the busybox image and returns its path.
 */
export function buildBusyboxImage(): Promise<string> {
  return buildImageArchive(BUSYBOX_IMAGE);
}

/**
 * Builds (or reuses) the OCI image archive of `variant` and returns its path. The cache key covers
 * the busybox bytes, the applet list, the variant and the recipe version, so a changed host binary
 * yields a new archive. Parallel test files may build at once: each builds privately and renames
 * into place atomically.
 */
export async function buildImageArchive(variant: ImageVariant): Promise<string> {
  const busybox = await ensureStaticBusybox();
  const arch = ociArchitecture();
  const key = createHash('sha256')
    .update(busybox)
    .update(JSON.stringify({ RECIPE_VERSION, APPLETS, arch, variant }))
    .digest('hex')
    .slice(0, 16);
  const base = variant.name.split('/').pop() ?? 'image';
  const archive = path.join(CACHE_DIR, `${base}-${variant.tag}-${key}.oci.tar`);
  if (await exists(archive)) return archive;

  await fs.mkdir(CACHE_DIR, { recursive: true });
  const work = await fs.mkdtemp(path.join(CACHE_DIR, 'build-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    await makeBusyboxRootfs(rootfs, busybox);
    const layerTar = path.join(work, 'layer.tar');
    await reproducibleTar(rootfs, layerTar, ['.']);
    const layerRaw = await fs.readFile(layerTar);

    const ociDir = path.join(work, 'oci');
    await fs.mkdir(path.join(ociDir, 'blobs', 'sha256'), { recursive: true });
    const layer = await writeBlob(ociDir, MEDIA.layerGzip, gzipSync(layerRaw, { level: 9 }));
    const config = await writeBlob(ociDir, MEDIA.config, json({
      created: EPOCH,
      architecture: arch,
      os: 'linux',
      config: {
        Env: IMAGE_ENV,
        ...(variant.entrypoint ? { Entrypoint: variant.entrypoint } : {}),
        Cmd: variant.cmd,
        WorkingDir: '/',
        ...(variant.user ? { User: variant.user } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerRaw)}`] },
      history: [{ created: EPOCH, created_by: 'tshim test/e2e/image.ts (busybox-static)' }],
    }));
    const manifest = await writeBlob(ociDir, MEDIA.manifest, json({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config,
      layers: [layer],
    }));
    await fs.writeFile(path.join(ociDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await fs.writeFile(path.join(ociDir, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [{
        ...manifest,
        platform: { architecture: arch, os: 'linux' },
        // A bare tag, as the OCI layout spec intends; `--base-name` supplies the repository.
        annotations: { 'org.opencontainers.image.ref.name': variant.tag },
      }],
    }));

    const staged = path.join(work, 'image.tar');
    await reproducibleTar(ociDir, staged, ['oci-layout', 'index.json', 'blobs']);
    await fs.rename(staged, archive);
    return archive;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/**
 * Imports the archive into `cd`'s namespace and returns the image reference to run.
 * `--base-name` + the tag annotation yields exactly one image, IMAGE_REF. (ctr 1.6's
 * `--index-name` with the same name as an annotated manifest fails with "content digest
 * <index>: not found", and with a bare tag it adds a second `import-<date>:e2e` image.)
 */
export function importBusyboxImage(cd: Pick<Containerd, 'ctr'>): Promise<string> {
  return importImage(cd, BUSYBOX_IMAGE);
}

/** Imports one variant (see importBusyboxImage) and returns its reference. */
export async function importImage(cd: Pick<Containerd, 'ctr'>, variant: ImageVariant): Promise<string> {
  const archive = await buildImageArchive(variant);
  const ref = imageRef(variant);
  await cd.ctr(['images', 'import', '--base-name', variant.name, archive], { timeoutMs: 60_000 });
  const listed = await cd.ctr(['images', 'ls', '-q']);
  if (!listed.stdout.split('\n').includes(ref)) {
    throw new Error(`import did not register ${ref}; images: ${listed.stdout.trim()}`);
  }
  return ref;
}
