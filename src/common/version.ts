/** Name, version and git revision. The revision is stamped at build time into dist/revision.txt. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { embeddedText, isSingleExecutable } from './sea';

export const SHIM_NAME = 'containerd-shim-tshim-v2';
export const RUNTIME_TYPE = 'io.containerd.tshim.v2';

export function shimVersion(): string {
  const embedded = embeddedText('version.txt')?.trim(); // the single executable (sea.ts)
  if (embedded) return embedded;
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function gitRevision(): string {
  const embedded = embeddedText('revision.txt')?.trim();
  if (embedded) return embedded;
  for (const candidate of [path.join(__dirname, '..', 'revision.txt'), path.join(__dirname, '..', '..', 'dist', 'revision.txt')]) {
    try {
      const rev = fs.readFileSync(candidate, 'utf8').trim();
      if (rev) return rev;
    } catch {
      // try the next place
    }
  }
  return 'unknown';
}

export function versionText(): string {
  const form = isSingleExecutable() ? '  Form:     single executable\n' : '';
  return `${SHIM_NAME}:\n  Version:  ${shimVersion()}\n  Revision: ${gitRevision()}\n  Node.js:  ${process.version}\n${form}`;
}
