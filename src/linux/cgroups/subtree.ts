/**
 * cgroup v2 only lets a group use a controller its parent delegates through cgroup.subtree_control.
 * containerd's runc shim enables every controller of the root on each ancestor of a container's
 * cgroup before stats and limits are needed; failures are expected in some setups (rootless, a
 * parent with processes in it) and are only logged, as the shim does.
 */
import * as fs from 'fs';
import * as path from 'path';
import { logger } from '../../common/log';
import { DEFAULT_CGROUP_ROOT, type CgroupRef } from './ref';

export interface SubtreeOptions {
  /** mount point of the unified hierarchy */
  root?: string;
  /** where failures go; the shim logger (warn) by default */
  log?: (message: string) => void;
}

export async function enableSubtreeControllers(ref: CgroupRef, opts: SubtreeOptions = {}): Promise<void> {
  if (ref.mode !== 'v2' || typeof ref.paths !== 'string') return;
  const root = opts.root ?? DEFAULT_CGROUP_ROOT;
  const log = opts.log ?? ((message: string) => logger.warn(message));
  let controllers: string[];
  try {
    controllers = (await fs.promises.readFile(path.join(root, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
  } catch (err) {
    log(`read root cgroup.controllers: ${(err as Error).message}`);
    return;
  }
  if (controllers.length === 0 || controllers[0] === '') return;
  const rel = path.relative(root, ref.paths);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return;
  const data = controllers.map((c) => `+${c}`).join(' ');
  // root first: a child can only delegate what its parent enabled for it; the cgroup itself is
  // left alone since enabling there would forbid processes in it
  const parts = rel.split(path.sep);
  for (let depth = 0; depth < parts.length; depth++) {
    const file = path.join(root, ...parts.slice(0, depth), 'cgroup.subtree_control');
    try {
      await fs.promises.writeFile(file, data, { flag: fs.constants.O_WRONLY });
    } catch (err) {
      log(`enable controllers "${data}" in ${file}: ${(err as Error).message}`);
    }
  }
}
