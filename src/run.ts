/**
 * containerd-shim-tshim-v2: argv → action (main.ts answers the commonest `delete` before this
 * module loads). containerd reads `start`'s combined stdout+stderr as our address, so Node's own
 * warnings must never reach stderr.
 */
import { fstatSync, readFileSync } from 'node:fs';
import { parseArgs } from './common/cli';
import { runCommand } from './common/actions';
import { unparkNodeEnv } from './common/node-env';
import { isSingleExecutable } from './common/sea';
import { currentPlatform } from './platform';
import { writeResult } from './common/result-output';

process.removeAllListeners('warning');
unparkNodeEnv(process.env);

/** containerd gives `start` a closed pipe or /dev/null: read it whole, without a stream. */
function readStdin(): Promise<Buffer> {
  try {
    // A terminal (someone running us by hand) is never read; nor is /dev/null, which has nothing
    // to read. Not isatty: node:tty loads node:net, 2 ms that `delete` has no other use for.
    if (fstatSync(0).isCharacterDevice()) return Promise.resolve(Buffer.alloc(0));
    return Promise.resolve(readFileSync(0));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return Promise.resolve(Buffer.alloc(0));
    return readStdinStream(); // a non-blocking stdin: let libuv wait for it
  }
}

function readStdinStream(): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (chunk: Buffer) => chunks.push(chunk));
    process.stdin.once('end', () => resolve(Buffer.concat(chunks)));
    process.stdin.once('error', () => resolve(Buffer.concat(chunks)));
  });
}

const command = parseArgs(process.argv.slice(2));
runCommand(command, {
  // getters: touching process.stdout creates a stream over fd 1, which the Windows daemon must
  // be able to close for real (its readiness signal) and Node never closes a stdio stream's fd
  get stdout() {
    return process.stdout;
  },
  get stderr() {
    return process.stderr;
  },
  readStdin,
  writeResult,
  // The single executable is its own program; otherwise node re-runs this script.
  selfCommand: isSingleExecutable() ? [process.execPath] : [process.execPath, ...process.execArgv, process.argv[1] ?? __filename],
  platform: currentPlatform(),
}).then(
  (code) => {
    // start/delete end here without closing handles: the listening socket handed to the daemon
    // must not be unlinked by a close on our side. Pipe writes to stdout are synchronous on Linux.
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
