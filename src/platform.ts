/**
 * The one place that picks a platform: src/common never imports src/linux or src/windows; the
 * entry point passes this object in. Each backend is imported only when a command needs it, so
 * `start` and `-v` load neither.
 */
import type { Backend, BackendContext, HandoverPlatform, Platform } from './common/backend';
import { Code, ShimError } from './common/errors';

export function currentPlatform(os: NodeJS.Platform = process.platform): Platform {
  if (os === 'win32') {
    return {
      name: os,
      // named pipes and the runhcs CLI contract; its module is small and loads no native code
      transport: (require('./windows/pipes') as typeof import('./windows/pipes')).windowsTransport,
      async loadBackend(context: BackendContext): Promise<Backend> {
        const { createWindowsBackend } = await import('./windows/backend');
        return createWindowsBackend(context);
      },
    };
  }
  if (os === 'linux') {
    return {
      name: os,
      async loadBackend(context: BackendContext): Promise<Backend> {
        const { createLinuxBackend } = await import('./linux/backend');
        return createLinuxBackend(context);
      },
      async warmUp(): Promise<void> {
        await (await import('./linux/backend')).warmUp();
      },
      redirectStderr(fifoPath: string): void {
        (require('./linux/backend') as typeof import('./linux/backend')).redirectStderr(fifoPath);
      },
      async handover(): Promise<HandoverPlatform> {
        const { setCloseOnExec, execve } = await import('./linux/libc');
        return { setCloseOnExec, execve };
      },
    };
  }
  return {
    name: os,
    async loadBackend(): Promise<Backend> {
      throw new ShimError(Code.Unimplemented, `no tshim backend for platform ${os} in this build`);
    },
  };
}
