/**
 * containerd 1.6/1.7 runs the shim binary's `delete` action every time a shim connection closes,
 * a normal task deletion included (its onClose callback, cleanupAfterDeadShim), and waits for it.
 * For a Node shim that is a Node process on every `ctr task rm`, CRI StopContainer and
 * RemovePodSandbox.
 *
 * So the daemon leaves `<bundle>/tshim-deleted`, the encoded DeleteResponse of the init, once it
 * has deleted the task (runtime state gone, rootfs unmounted): `delete` then prints it and does
 * nothing else, without loading the backend or running the runtime. Should the daemon die between
 * writing it and replying, containerd publishes the init's real exit status instead of 137. The
 * daemon removes a stale marker when a container is created in the bundle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const DELETED_MARKER = 'tshim-deleted';

/** `response` is the encoded DeleteResponse (wire.ts), as `delete` prints it. */
export function writeDeletedMarker(bundle: string, response: Uint8Array): void {
  const file = path.join(bundle, DELETED_MARKER);
  const tmp = `${file}.${process.pid}`;
  fs.writeFileSync(tmp, response, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function removeDeletedMarker(bundle: string): void {
  fs.rmSync(path.join(bundle, DELETED_MARKER), { force: true });
}

/** The DeleteResponse the daemon left, or undefined when the full cleanup must run. */
export function readDeletedMarker(bundle: string): Buffer | undefined {
  try {
    return fs.readFileSync(path.join(bundle, DELETED_MARKER));
  } catch {
    return undefined;
  }
}

/**
 * The marker a `delete` command line points at, when it is containerd's form (`… -bundle B …
 * delete`) and B has one; undefined sends it through the whole action (actions.ts), which looks
 * for the marker again after parsing the flags in full.
 */
export function deletedMarkerFor(argv: readonly string[]): Buffer | undefined {
  if (argv[argv.length - 1] !== 'delete') return undefined;
  const at = argv.indexOf('-bundle');
  const bundle = at >= 0 ? argv[at + 1] : undefined;
  return bundle && path.isAbsolute(bundle) ? readDeletedMarker(bundle) : undefined;
}
