/**
 * libuv's threadpool has 4 threads unless UV_THREADPOOL_SIZE says otherwise at the moment the pool
 * starts. A daemon holds one of them for as long as a call into the kernel waits there: the cgroup
 * v1 OOM epoll wait (for as long as it watches), a mount or an unmount that waits on its filesystem
 * (src/linux/libc.ts, mountOffLoop). With 4, three stuck mounts would leave every other container's
 * file operations waiting for the last thread. Each thread costs ~8 KiB of private memory (measured:
 * 16 threads +0.1 MiB over 4).
 */
import { access } from 'node:fs';

export const DAEMON_THREADPOOL_SIZE = 16;

/**
 * Starts the pool with `size` threads, unless the operator chose a size. Must run before anything
 * else uses the pool; the variable is gone again afterwards, so the processes the daemon runs (the
 * runtime, hooks, logging binaries) see containerd's environment unchanged.
 */
export function startThreadpool(size: number = DAEMON_THREADPOOL_SIZE): void {
  if (process.env.UV_THREADPOOL_SIZE !== undefined) return;
  process.env.UV_THREADPOOL_SIZE = String(size);
  try {
    // The first piece of work queued starts the pool, which reads the variable then and there.
    access('/', () => undefined);
  } finally {
    delete process.env.UV_THREADPOOL_SIZE;
  }
}
