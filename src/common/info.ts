/** `-info` (containerd 2.x): a RuntimeInfo protobuf describing the shim and its OCI runtime. */
import type { Platform } from './backend';
import { codec } from './proto';
import { RUNTIME_TYPE, gitRevision, shimVersion } from './version';

export async function runtimeInfo(stdin: Buffer, platform: Platform): Promise<Buffer> {
  const { decodeAny } = await import('./wire');
  const options = stdin.length > 0 ? decodeAny(stdin) : undefined;
  const backend = await platform.loadBackend({ namespace: '', debug: false });
  const features = await backend.runtimeFeatures(options);
  return codec<object>('containerd.types.RuntimeInfo').encode({
    name: RUNTIME_TYPE,
    version: { version: shimVersion(), revision: gitRevision() },
    options: options && options.typeUrl ? options : undefined,
    features,
  });
}
