// @ts-check
'use strict';
/**
 * Issue #7's targets, checked against one run's medians. Every target reads rows of the same run
 * (ratios of interleaved samples), so a loaded machine shifts both sides of a ratio alike.
 */

/**
 * @typedef {object} Target
 * @property {string} label
 * @property {'ratioMax' | 'ratioMin' | 'tshimMax' | 'overRowMax'} kind
 *   ratioMax: tshim/runc median ≤ limit; ratioMin: ≥ limit (throughput); tshimMax: tshim median ≤
 *   limit (unit of the row); overRowMax: tshim median of `row` − tshim median of `base` ≤ limit
 * @property {string} row
 * @property {string} [base]
 * @property {number} limit
 */

/** @type {readonly Target[]} */
const TARGETS = [
  { label: 'ctr run --rm, spare ready', kind: 'ratioMax', row: 'runRm', limit: 1.5 },
  { label: 'ctr run --rm, no spare', kind: 'ratioMax', row: 'runRmNoSpare', limit: 2.0 },
  { label: 'ctr run -d, grouped', kind: 'ratioMax', row: 'runGrouped', limit: 1.2 },
  { label: 'ctr task exec', kind: 'ratioMax', row: 'exec', limit: 1.0 },
  { label: 'stdout throughput, FIFO', kind: 'ratioMin', row: 'ioFifo', limit: 1.0 },
  { label: 'stdout throughput, TTY', kind: 'ratioMin', row: 'ioTty', limit: 1.0 },
  { label: 'burst of ctr run -d, wall', kind: 'ratioMax', row: 'burst', limit: 1.2 },
  { label: 'burst of ctr run -d, wall (tshim namespace policy)', kind: 'ratioMax', row: 'burstNs', limit: 1.2 },
  { label: 'start action (spare ready) - node -e 0', kind: 'overRowMax', row: 'start', base: 'floor', limit: 10 },
  { label: 'start action (no spare) - node -e 0', kind: 'overRowMax', row: 'startNoSpare', base: 'floor', limit: 10 },
  { label: 'Private_Dirty, daemon with one container', kind: 'tshimMax', row: 'pdOne', limit: 8 },
  { label: 'CRI RunPodSandbox', kind: 'ratioMax', row: 'criRunPod', limit: 1.5 },
  { label: 'CRI container create+start', kind: 'ratioMax', row: 'criCtrStart', limit: 1.5 },
  { label: 'CRI container stop', kind: 'ratioMax', row: 'criCtrStop', limit: 1.5 },
  { label: 'Private_Dirty per extra grouped container', kind: 'tshimMax', row: 'pdMarginal', limit: 0.5 },
  { label: 'PSS of all shims, pods x 2 (per-pod grouping)', kind: 'ratioMax', row: 'podsPss', limit: 0.5 },
  { label: 'PSS of all shims, pods x 2 (tshim namespace policy vs runc per pod)', kind: 'ratioMax', row: 'podsPssNs', limit: 0.5 },
];

/**
 * @typedef {object} TargetResult
 * @property {string} label
 * @property {string} target human form, e.g. "<= 1.50x"
 * @property {number | null} measured the ratio, the value, or the difference
 * @property {string} unit 'x' for ratios, else the row's unit
 * @property {boolean | null} met null when a side is missing
 * @property {string} verdict "met", "missed by 0.42x", "not measured"
 */

/**
 * @param {readonly Target[]} targets
 * @param {(id: string) => { unit: string, runc?: number, tshim?: number } | undefined} median
 *   medians of a row per runtime
 * @returns {TargetResult[]}
 */
function evaluateTargets(targets, median) {
  return targets.map((t) => {
    const row = median(t.row);
    let measured;
    let unit = 'x';
    let target;
    if (t.kind === 'ratioMax' || t.kind === 'ratioMin') {
      measured = row?.runc && row.tshim !== undefined ? row.tshim / row.runc : undefined;
      target = `${t.kind === 'ratioMax' ? '<=' : '>='} ${t.limit.toFixed(2)}x`;
    } else if (t.kind === 'tshimMax') {
      measured = row?.tshim;
      unit = row?.unit ?? '';
      target = `<= ${t.limit} ${unit}`;
    } else {
      const base = median(t.base ?? '');
      measured = row?.tshim !== undefined && base?.tshim !== undefined ? row.tshim - base.tshim : undefined;
      unit = row?.unit ?? '';
      target = `<= ${t.base} + ${t.limit} ${unit}`;
    }
    if (measured === undefined || !Number.isFinite(measured)) {
      return { label: t.label, target, measured: null, unit, met: null, verdict: 'not measured' };
    }
    const met = t.kind === 'ratioMin' ? measured >= t.limit : measured <= t.limit;
    const by = Math.abs(measured - t.limit);
    const fmt = unit === 'x' ? `${by.toFixed(2)}x` : `${by.toFixed(1)} ${unit}`;
    return { label: t.label, target, measured, unit, met, verdict: met ? 'met' : `missed by ${fmt}` };
  });
}

/**
 * @param {TargetResult[]} results
 * @returns {string[]}
 */
function targetLines(results) {
  const show = (/** @type {TargetResult} */ r) =>
    r.measured === null ? '-' : r.unit === 'x' ? `${r.measured.toFixed(2)}x` : `${r.measured.toFixed(1)} ${r.unit}`;
  const rows = results.map((r) => [r.label, r.target, show(r), r.verdict]);
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((l) => (l[c] ?? '').length)));
  return rows.map((l) => `  ${l.map((cell, c) => (c < 3 ? cell.padEnd(widths[c] ?? 0) : cell)).join('  ')}`);
}

module.exports = { TARGETS, evaluateTargets, targetLines };
