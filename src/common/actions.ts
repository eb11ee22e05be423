/**
 * The command-line actions containerd runs (`start`, `delete`) plus the ones people run (`-v`,
 * `-info`). Only what an action needs is loaded, and only the contract's output reaches stdout.
 */
import * as path from 'node:path';
import type { Platform } from './backend';
import type { Command, ShimFlags } from './cli';
import { USAGE, misuseLine } from './cli';
import { checkNativeBeside } from './sea';
import { startThreadpool } from './threadpool';

export interface ActionIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Writes what containerd reads from `start` and `delete` (the address, the DeleteResponse). */
  writeResult(data: string | Uint8Array): void;
  readStdin(): Promise<Buffer>;
  /** argv that re-runs this program, e.g. [node, /path/bin/containerd-shim-tshim-v2] */
  selfCommand: readonly string[];
  /** the machine's backend, chosen by the entry point (src/platform.ts) */
  platform: Platform;
}

/** Resolves with the process exit code; a daemon (`serve`) resolves once it runs. */
export async function runCommand(command: Command, io: ActionIO): Promise<number> {
  switch (command.kind) {
    case 'version': {
      const { versionText } = await import('./version');
      io.stdout.write(versionText());
      return 0;
    }
    case 'help':
      io.stdout.write(USAGE);
      return 0;
    case 'usage':
      io.stderr.write(misuseLine(command.error));
      return 2;
    case 'start':
      return runStartAction(command.flags, io);
    case 'delete':
      return runDeleteAction(command.flags, io);
    case 'info': {
      const { runtimeInfo } = await import('./info');
      io.stdout.write(await runtimeInfo(await io.readStdin(), io.platform));
      return 0;
    }
    case 'upgrade': {
      const { runUpgradeCommand } = await import('./upgrade/command');
      return runUpgradeCommand(command.flags, command.socketDir, io.stdout, io.stderr);
    }
    case 'upgrade-check': {
      const { runUpgradeCheck } = await import('./upgrade/handover');
      const result = await runUpgradeCheck(command.file, io.platform);
      (result.ok ? io.stdout : io.stderr).write(result.text);
      return result.ok ? 0 : 1;
    }
    case 'serve': {
      startThreadpool();
      const { runDaemon } = await import('./daemon');
      await runDaemon(command.flags, io.platform);
      return -1;
    }
    case 'spare': {
      // A spare loads ahead of need what its first container will run, and compiles it ahead of
      // need too: V8 otherwise compiles each function on its first call, which would be in the
      // adopted spare's first Create, Start and Delete (~20 ms of `ctr run --rm` here, for ~1.7 MiB
      // of bytecode). Lazy again once warm: what is loaded later is loaded on demand anyway.
      startThreadpool();
      // The codecs are loaded first: eagerly, the whole static module would compile (~1,100
      // functions, most for messages a daemon never sends); lazily, warmCodecs compiles those it
      // runs and the rest stay source.
      const { loadCodecs } = await import('./proto');
      loadCodecs();
      const { setFlagsFromString } = await import('node:v8');
      setFlagsFromString('--no-lazy');
      const { runSpare } = await import('./daemon');
      await runSpare(command.flags, io.platform, () => setFlagsFromString('--lazy'));
      return -1;
    }
  }
}

async function runStartAction(flags: ShimFlags, io: ActionIO): Promise<number> {
  const { runStart, protocolFromEnv } = await import('./bootstrap');
  const start = io.platform.transport?.start ?? runStart;
  try {
    checkNativeBeside();
    const result = await start({
      flags,
      bundle: flags.bundle || process.cwd(),
      stdin: await io.readStdin(),
      protocol: protocolFromEnv(),
      selfCommand: io.selfCommand,
    });
    io.writeResult(result.output);
    return 0;
  } catch (err) {
    io.stderr.write(`start failed: ${(err as Error).message}\n`);
    return 1;
  }
}

/**
 * Cleans up after a shim that is gone and reports the init as killed (137), as the runc shim
 * does: containerd publishes that status if the task never reported its own exit.
 */
async function runDeleteAction(flags: ShimFlags, io: ActionIO): Promise<number> {
  const bundle = flags.bundle || path.join(path.dirname(process.cwd()), flags.id);
  // the daemon deleted the task itself: nothing is left to clean up (deleted-marker.ts)
  const done = (await import('./deleted-marker')).readDeletedMarker(bundle);
  if (done) {
    io.writeResult(done);
    return 0;
  }
  try {
    const backend = await io.platform.loadBackend({ namespace: flags.namespace, debug: flags.debug });
    const { pid, exitStatus } = await backend.cleanup({ id: flags.id, namespace: flags.namespace, bundle });
    const { encodeDeleteResponse } = await import('./wire');
    io.writeResult(encodeDeleteResponse({ pid, exitStatus: exitStatus ?? 128 + 9, exitedAt: new Date() }));
    return 0;
  } catch (err) {
    io.stderr.write(`delete failed: ${(err as Error).message}\n`);
    return 1;
  }
}
