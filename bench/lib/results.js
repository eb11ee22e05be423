// @ts-check
'use strict';
/**
 * Collects samples per (row, runtime) and renders them: an aligned plain-text table for people
 * and a JSON document for machines. Rows are declared up front so the table's order does not
 * depend on which phase happened to run first or fail.
 */
const { summarize, ratio } = require('./stats');

/** @typedef {'runc' | 'tshim'} RuntimeKey */
/** @typedef {import('./stats').Summary} Summary */

/**
 * @typedef {object} RowSpec
 * @property {string} id
 * @property {string} label
 * @property {string} unit
 * @property {'samples' | 'value'} kind 'value' rows hold one number per runtime (a total), so
 *   p90 and mean would only repeat it
 */

/**
 * @typedef {object} RowData
 * @property {RowSpec} spec
 * @property {Record<RuntimeKey, number[]>} samples
 * @property {Record<RuntimeKey, string[]>} failures
 */

const RUNTIME_KEYS = /** @type {const} */ (['runc', 'tshim']);

class Results {
  /** @param {readonly RowSpec[]} specs */
  constructor(specs) {
    /** @type {Map<string, RowData>} */
    this.rows = new Map(specs.map((spec) => [spec.id, { spec, samples: { runc: [], tshim: [] }, failures: { runc: [], tshim: [] } }]));
    /** @type {string[]} */
    this.notes = [];
  }

  /** @param {string} id */
  row(id) {
    const row = this.rows.get(id);
    if (!row) throw new Error(`unknown result row ${id}`);
    return row;
  }

  /**
   * @param {string} id
   * @param {RuntimeKey} runtime
   * @param {number} value
   */
  add(id, runtime, value) {
    this.row(id).samples[runtime].push(value);
  }

  /**
   * @param {string} id
   * @param {RuntimeKey} runtime
   * @param {unknown} err
   */
  fail(id, runtime, err) {
    this.row(id).failures[runtime].push(err instanceof Error ? err.message : String(err));
  }

  /**
   * Medians of a row per runtime (undefined for a side without samples), for the targets.
   * @param {string} id
   * @returns {{ unit: string, runc?: number, tshim?: number } | undefined}
   */
  medians(id) {
    const row = this.rows.get(id);
    if (!row) return undefined;
    return { unit: row.spec.unit, runc: summarize(row.samples.runc)?.median, tshim: summarize(row.samples.tshim)?.median };
  }

  /** @param {string} text something a reader of the numbers must know (leftovers, odd counts) */
  note(text) {
    this.notes.push(text);
  }

  /**
   * @template {Record<string, unknown>} M
   * @param {M} meta run parameters and environment
   */
  toJSON(meta) {
    return {
      ...meta,
      rows: [...this.rows.values()].map(({ spec, samples, failures }) => {
        const runc = summarize(samples.runc);
        const tshim = summarize(samples.tshim);
        return {
          id: spec.id,
          label: spec.label,
          unit: spec.unit,
          kind: spec.kind,
          runc: runc ?? null,
          tshim: tshim ?? null,
          ratioMedian: ratio(tshim?.median, runc?.median) ?? null,
          ratioMean: spec.kind === 'samples' ? ratio(tshim?.mean, runc?.mean) ?? null : null,
          samples,
          failures,
        };
      }),
      notes: this.notes,
    };
  }

  /**
   * @param {string[]} header lines printed above the table
   * @returns {string}
   */
  toTable(header) {
    // One decimal is below the run-to-run noise of every row in both units (ms, MiB).
    const num = (/** @type {number | undefined} */ v) => (v === undefined ? '-' : v.toFixed(1));
    const rat = (/** @type {number | undefined} */ v) => (v === undefined ? '-' : `${v.toFixed(2)}x`);
    /** @type {string[][]} */
    const lines = [
      ['', '', 'runc', '', '', 'tshim', '', '', 'tshim/runc', '', ''],
      ['metric', 'unit', 'median', 'p90', 'mean', 'median', 'p90', 'mean', 'median', 'mean', 'n ok (runc/tshim)'],
    ];
    for (const { spec, samples, failures } of this.rows.values()) {
      const r = summarize(samples.runc);
      const t = summarize(samples.tshim);
      const value = spec.kind === 'value';
      const cells = (/** @type {Summary | undefined} */ s) =>
        value ? [num(s?.median), '', ''] : [num(s?.median), num(s?.p90), num(s?.mean)];
      const count = (/** @type {RuntimeKey} */ k) => {
        const failed = failures[k].length;
        return failed > 0 ? `${samples[k].length}(${failed} failed)` : String(samples[k].length);
      };
      lines.push([
        spec.label,
        spec.unit,
        ...cells(r),
        ...cells(t),
        rat(ratio(t?.median, r?.median)),
        value ? '' : rat(ratio(t?.mean, r?.mean)),
        // A total is one number per runtime by construction; a count of 1 would only confuse.
        value ? '' : `${count('runc')}/${count('tshim')}`,
      ]);
    }
    const widths = lines[1]?.map((_, col) => Math.max(...lines.map((l) => (l[col] ?? '').length))) ?? [];
    // Text columns align left, numbers right; the group captions sit over their first column.
    const render = (/** @type {string[]} */ l) =>
      l
        .map((cell, col) => (col < 2 || col === l.length - 1 ? cell.padEnd(widths[col] ?? 0) : cell.padStart(widths[col] ?? 0)))
        .join('  ')
        .trimEnd();
    const caption = (/** @type {string[]} */ l) =>
      l.map((cell, col) => cell.padEnd(widths[col] ?? 0)).join('  ').trimEnd();
    const body = [caption(/** @type {string[]} */ (lines[0])), ...lines.slice(1).map(render)];
    const rule = '-'.repeat(Math.max(...body.map((l) => l.length)));
    /** @type {string[]} */
    const failureLines = [];
    for (const { spec, failures } of this.rows.values()) {
      for (const k of RUNTIME_KEYS) {
        const first = failures[k][0];
        if (first !== undefined) failureLines.push(`  ${spec.label} [${k}] ${failures[k].length}x, first: ${first.split('\n')[0]}`);
      }
    }
    return [
      ...header,
      '',
      body[0],
      body[1],
      rule,
      ...body.slice(2),
      rule,
      ...(failureLines.length > 0 ? ['failures:', ...failureLines] : []),
      ...(this.notes.length > 0 ? ['notes:', ...this.notes.map((n) => `  ${n}`)] : []),
      '',
    ].join('\n');
  }
}

module.exports = { Results, RUNTIME_KEYS };
