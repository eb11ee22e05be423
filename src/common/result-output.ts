/**
 * What containerd reads from `start` and `delete` (the address, the DeleteResponse), written
 * synchronously to fd 1: process.stdout over containerd's pipe would be a net.Socket, 3 ms of
 * loading and setting up for a few bytes. A non-blocking pipe that is full falls back to it.
 */
import { writeSync } from 'node:fs';

export function writeResult(data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  for (let written = 0; written < bytes.length; ) {
    try {
      written += writeSync(1, bytes, written);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      process.stdout.write(bytes.subarray(written));
      return;
    }
  }
}
