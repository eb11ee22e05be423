/**
 * containerd-shim-tshim-v2's entry point. containerd 1.6/1.7 runs `delete` on every shim
 * disconnect, and waits for it; most often right after a normal deletion, when the daemon left
 * its answer in the bundle (deleted-marker.ts). That one is answered here, before the rest of the
 * program is loaded (~3.5 ms less); everything else is run.ts.
 */
import { deletedMarkerFor } from './common/deleted-marker';
import { writeResult } from './common/result-output';

const answer = deletedMarkerFor(process.argv.slice(2));
if (answer) {
  writeResult(answer);
  process.exit(0);
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('./run');
}
