/**
 * node:crypto, loaded on first use rather than with the modules that use it: daemons load those
 * modules and most never call these (node:crypto is 5 ms of a daemon's start).
 */
type Crypto = typeof import('node:crypto');

function crypto(): Crypto {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('node:crypto') as Crypto;
}

/** sha256 of `text` as hex (socket names). */
export function sha256Hex(text: string): string {
  return crypto().createHash('sha256').update(text).digest('hex');
}

/** A random 48-bit integer (unpredictable private file names). */
export function randomUint48(): number {
  return crypto().randomBytes(6).readUIntBE(0, 6);
}
