// @ts-check
'use strict';
/**
 * Summary statistics for benchmark samples. Percentiles interpolate linearly between ranks (the
 * "R-7" definition spreadsheets use), so p90 of a small sample is not pinned to its maximum.
 */

/**
 * @typedef {object} Summary
 * @property {number} n
 * @property {number} median
 * @property {number} p90
 * @property {number} mean
 * @property {number} min
 * @property {number} max
 */

/**
 * @param {readonly number[]} sorted ascending, non-empty
 * @param {number} q in [0, 1]
 * @returns {number}
 */
function quantileSorted(sorted, q) {
  if (sorted.length === 0) throw new RangeError('quantile of an empty sample');
  if (q < 0 || q > 1) throw new RangeError(`quantile ${q} outside [0, 1]`);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = /** @type {number} */ (sorted[lo]);
  const b = /** @type {number} */ (sorted[hi]);
  return a + (b - a) * (pos - lo);
}

/**
 * @param {readonly number[]} samples
 * @returns {Summary | undefined} undefined for an empty sample (every attempt failed)
 */
function summarize(samples) {
  if (samples.length === 0) return undefined;
  const sorted = [...samples].sort((x, y) => x - y);
  const mean = sorted.reduce((s, x) => s + x, 0) / sorted.length;
  return {
    n: sorted.length,
    median: quantileSorted(sorted, 0.5),
    p90: quantileSorted(sorted, 0.9),
    mean,
    min: /** @type {number} */ (sorted[0]),
    max: /** @type {number} */ (sorted[sorted.length - 1]),
  };
}

/**
 * tshim/runc; undefined when either side is missing or the reference is zero (a ratio against
 * nothing would read as a result).
 * @param {number | undefined} tshim
 * @param {number | undefined} runc
 * @returns {number | undefined}
 */
function ratio(tshim, runc) {
  if (tshim === undefined || runc === undefined || runc === 0) return undefined;
  return tshim / runc;
}

module.exports = { quantileSorted, summarize, ratio };
