'use strict';
/**
 * The forms tshim ships in, for tools that compare them (bench/run.js): each form's binary and
 * whether it is built. bench/run.js times every built form besides the launcher (`tshim`) in rows
 * of its own (start, `ctr run -d`, daemon memory), containerd running it by absolute path as the
 * runtime. TSHIM_BENCH_FORMS=tshim,tshim-sea narrows the list. Nothing here builds anything: the
 * single executable comes from `npm run package`. The Windows executable (out/win-x64) is no form
 * here: the bench runs Linux containers.
 */
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const NAME = 'containerd-shim-tshim-v2';

function shimForms(env = process.env) {
  const forms = [
    { key: 'tshim', label: 'launcher (node + dist/)', runtime: 'io.containerd.tshim.v2', binary: path.join(REPO, 'bin', NAME), shimName: NAME },
    { key: 'tshim-sea', label: 'single executable', runtime: 'io.containerd.tshim.v2', binary: path.join(REPO, 'out', 'linux-x64', NAME), shimName: NAME },
  ];
  const wanted = env.TSHIM_BENCH_FORMS ? new Set(env.TSHIM_BENCH_FORMS.split(',').map((s) => s.trim())) : undefined;
  return forms
    .filter((f) => !wanted || wanted.has(f.key))
    .map((f) => ({ ...f, available: fs.existsSync(f.binary) }));
}

module.exports = { shimForms };

if (require.main === module) {
  for (const f of shimForms()) process.stdout.write(`${f.key}\t${f.available ? 'built' : 'not built'}\t${f.binary}\n`);
}
