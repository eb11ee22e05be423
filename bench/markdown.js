#!/usr/bin/env node
// @ts-check
'use strict';
/**
 * Renders a bench/results.json as Markdown (medians, ratio of medians, targets) for the README:
 * `node bench/markdown.js [bench/results.json]`.
 */
const fs = require('node:fs');
const path = require('node:path');

/**
 * @param {any} doc a results.json document
 * @returns {string}
 */
function toMarkdown(doc) {
  const num = (/** @type {number | null | undefined} */ v, /** @type {string} */ unit) =>
    v === null || v === undefined ? '-' : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${unit}`;
  const lines = ['| figure | runc-v2 | tshim | tshim/runc |', '|---|---|---|---|'];
  for (const row of doc.rows) {
    if (!row.runc && !row.tshim) continue;
    const ratio = row.ratioMedian === null ? '-' : `${row.ratioMedian.toFixed(2)}x`;
    lines.push(`| ${row.label.replace(/\|/g, '\\|')} | ${num(row.runc?.median, row.unit)} | ${num(row.tshim?.median, row.unit)} | ${ratio} |`);
  }
  if (Array.isArray(doc.targets) && doc.targets.length > 0) {
    lines.push('', '| issue #7 target | limit | measured | verdict |', '|---|---|---|---|');
    for (const t of doc.targets) {
      const m = t.measured === null ? '-' : t.unit === 'x' ? `${t.measured.toFixed(2)}x` : `${t.measured.toFixed(1)} ${t.unit}`;
      lines.push(`| ${t.label} | ${t.target} | ${m} | ${t.verdict} |`);
    }
  }
  return `${lines.join('\n')}\n`;
}

if (require.main === module) {
  const file = process.argv[2] ?? path.join(__dirname, 'results.json');
  process.stdout.write(toMarkdown(JSON.parse(fs.readFileSync(file, 'utf8'))));
}

module.exports = { toMarkdown };
