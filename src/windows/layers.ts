/**
 * containerd's `windows-layer` rootfs mount → a mounted scratch volume (spec §7). The mount's
 * source is the writable snapshot (holding sandbox.vhdx); `parentLayerPaths=<JSON array>` lists the
 * read-only parents, nearest first, base last. Mounting is Activate → Prepare (with NameToGuid ids)
 * → GetLayerMountPath; teardown is Unprepare → Deactivate. Every failure after a step undoes the
 * steps before it, in reverse; PrepareLayer is serialized process-wide (hcsshim does, the filter
 * driver misbehaves otherwise); Activate/Prepare are retried on ERROR_NOT_READY and
 * ERROR_DEVICE_NOT_CONNECTED, up to 5 times with 100 ms pauses (spec §7.3).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { failedPrecondition, invalidArgument } from '../common/errors';
import { logger } from '../common/log';
import { Mutex } from '../common/mutex';
import type { MountSpec } from '../common/backend';
import type { HcsApi, LayerDescriptor } from './hcs-api';
import { failed, HcsError, isRetryableLayerError } from './hcs-errors';

export const WINDOWS_LAYER = 'windows-layer';
const PARENTS_OPTION = 'parentLayerPaths=';
const RETRIES = 5;
const RETRY_PAUSE_MS = 100;

export interface LayerMount {
  /** the writable snapshot folder (scratch), the id the layer calls take */
  scratch: string;
  /** read-only parents, nearest first, base last */
  parents: string[];
}

/** The one rootfs mount containerd hands a Windows shim, parsed; other types are refused. */
export function parseLayerMount(rootfs: readonly MountSpec[]): LayerMount | undefined {
  if (rootfs.length === 0) return undefined;
  if (rootfs.length > 1) throw invalidArgument(`expected one rootfs mount on Windows, got ${rootfs.length}`);
  const m = rootfs[0]!;
  if (m.type !== WINDOWS_LAYER) {
    throw failedPrecondition(`rootfs mount type ${JSON.stringify(m.type)} is not supported by tshim (only ${WINDOWS_LAYER}; CimFS and BlockCIM are not)`);
  }
  if (!m.source) throw invalidArgument('windows-layer mount has no source');
  let parents: string[] = [];
  for (const option of m.options) {
    if (!option.startsWith(PARENTS_OPTION)) continue;
    try {
      const value = JSON.parse(option.slice(PARENTS_OPTION.length)) as unknown;
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v !== '')) throw new Error('not an array of paths');
      parents = value as string[];
    } catch (err) {
      throw invalidArgument(`windows-layer option ${option}: ${(err as Error).message}`);
    }
  }
  return { scratch: m.source, parents };
}

/** OCI `windows.layerFolders` (legacy callers): parents top-most first, scratch last. */
export function layerMountFromFolders(folders: readonly string[]): LayerMount {
  if (folders.length < 2) throw invalidArgument('windows.layerFolders needs at least one layer and the scratch folder');
  return { scratch: folders[folders.length - 1]!, parents: folders.slice(0, -1) };
}

/** Windows base name of a layer folder (either separator). */
export function layerName(folder: string): string {
  const trimmed = folder.replace(/[\\/]+$/, '');
  return trimmed.slice(Math.max(trimmed.lastIndexOf('\\'), trimmed.lastIndexOf('/')) + 1);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Layers {
  /** PrepareLayer is serialized for the whole process. */
  private readonly prepareLock = new Mutex();

  constructor(private readonly api: HcsApi) {}

  async descriptors(parents: readonly string[]): Promise<LayerDescriptor[]> {
    const out: LayerDescriptor[] = [];
    for (const p of parents) {
      const r = await this.api.nameToGuid(layerName(p));
      if (failed(r.hr)) throw new HcsError('NameToGuid', p, r.hr);
      out.push({ id: r.guid, path: p });
    }
    return out;
  }

  /** Activate → Prepare → mount path; returns the volume path. Undoes itself on failure. */
  async mount(layer: LayerMount): Promise<{ volumePath: string; parents: LayerDescriptor[] }> {
    const parents = await this.descriptors(layer.parents);
    await this.retrying('ActivateLayer', layer.scratch, () => this.api.activateLayer(layer.scratch));
    try {
      await this.prepareLock.run(() => this.retrying('PrepareLayer', layer.scratch, () => this.api.prepareLayer(layer.scratch, parents)));
    } catch (err) {
      await this.step('DeactivateLayer', layer.scratch, () => this.api.deactivateLayer(layer.scratch));
      throw err;
    }
    try {
      const r = await this.api.getLayerMountPath(layer.scratch);
      if (failed(r.hr)) throw new HcsError('GetLayerMountPath', layer.scratch, r.hr);
      if (!r.mountPath) throw new HcsError('GetLayerMountPath', layer.scratch, 0, [], 'no mount path returned');
      return { volumePath: r.mountPath, parents };
    } catch (err) {
      await this.unmount(layer.scratch);
      throw err;
    }
  }

  /** Unprepare → Deactivate; both are attempted, failures logged. Returns false if one failed. */
  async unmount(scratch: string): Promise<boolean> {
    const a = await this.step('UnprepareLayer', scratch, () => this.api.unprepareLayer(scratch));
    const b = await this.step('DeactivateLayer', scratch, () => this.api.deactivateLayer(scratch));
    return a && b;
  }

  private async step(op: string, scratch: string, call: () => Promise<number>): Promise<boolean> {
    try {
      const hr = await call();
      if (failed(hr)) throw new HcsError(op, scratch, hr);
      return true;
    } catch (err) {
      logger.warn('layer teardown step failed', { op, scratch, error: err });
      return false;
    }
  }

  private async retrying(op: string, scratch: string, call: () => Promise<number>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const hr = await call();
      if (!failed(hr)) return;
      if (!isRetryableLayerError(hr) || attempt >= RETRIES) throw new HcsError(op, scratch, hr);
      await sleep(RETRY_PAUSE_MS);
    }
  }
}

/** Where the daemon records the mounted scratch so `delete` can unmount after a crash. */
export function layerRecordPath(bundle: string): string {
  return path.join(bundle, 'layer-mount.json');
}

export async function recordLayerMount(bundle: string, scratch: string): Promise<void> {
  await fs.writeFile(layerRecordPath(bundle), JSON.stringify({ scratch }));
}

export async function readLayerRecord(bundle: string): Promise<string | undefined> {
  try {
    const doc = JSON.parse(await fs.readFile(layerRecordPath(bundle), 'utf8')) as { scratch?: unknown };
    return typeof doc.scratch === 'string' ? doc.scratch : undefined;
  } catch {
    return undefined;
  }
}

export async function forgetLayerMount(bundle: string): Promise<void> {
  await fs.rm(layerRecordPath(bundle), { force: true });
}
