'use strict';
/**
 * The forms tshim ships in, for tools that compare them (bench/run.js): each form's binary and
 * whether it is built. The bench hook for issue #10: bench/run.js can add a row per available form
 * next to its `tshim` (launcher) runtime, e.g.
 *
 *   const { shimForms } = require('../scripts/shim-forms');
 *   for (const f of shimForms().filter((f) => f.available)) RUNTIMES.push({ key: f.key, ...f });
 *
 * (each form is started by containerd from `binary`, runtime type io.containerd.tshim.v2, so rows
 * need a containerd whose PATH has path.dirname(binary) first, or `runtime_type = binary`).
 * TSHIM_BENCH_FORMS=tshim,tshim-sea narrows the list. Nothing here builds anything: the single
 * executable comes from `npm run package`.
 */
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const NAME = 'containerd-shim-tshim-v2';

function shimForms(env = process.env) {
  const forms = [
    { key: 'tshim', label: 'launcher (node + dist/)', runtime: 'io.containerd.tshim.v2', binary: path.join(REPO, 'bin', NAME), shimName: NAME },
    { key: 'tshim-sea', label: 'single executable', runtime: 'io.containerd.tshim.v2', binary: path.join(REPO, 'out', 'linux-x64', NAME), shimName: NAME },
    // Windows (with the Windows backend): { key: 'tshim-sea-win', binary: out/win-x64/containerd-shim-tshim-v2.exe }
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
