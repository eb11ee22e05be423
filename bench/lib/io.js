// @ts-check
'use strict';
/**
 * Helpers of the IO rows. Throughput is timed inside the container: `cat /proc/uptime` before and
 * after `dd` (the container shares the host's clock: runc sets up no time namespace), so the rate
 * is that of the stdout path alone (dd blocks on a full pipe until the shim and ctr drain it) and
 * not the container's start and teardown, which the latency rows already cover.
 */

/** MB/s are decimal megabytes, as dd reports them. */
const MB = 1e6;

/**
 * Seconds since boot from /proc/uptime's text ("12345.67 890.12").
 * @param {string} text
 * @returns {number}
 */
function parseUptime(text) {
  const first = text.trim().split(/\s+/)[0] ?? '';
  const v = Number(first);
  if (first === '' || !Number.isFinite(v)) throw new Error(`not /proc/uptime output: ${JSON.stringify(text)}`);
  return v;
}

/**
 * MB/s for `bytes` written between two /proc/uptime readings. /proc/uptime has 10 ms resolution,
 * so the interval is floored at 10 ms rather than divided by zero.
 * @param {number} bytes
 * @param {string} before
 * @param {string} after
 * @returns {{ seconds: number, mbps: number }}
 */
function ioRate(bytes, before, after) {
  const seconds = parseUptime(after) - parseUptime(before);
  if (seconds < 0) throw new Error(`clock went backwards: ${before.trim()} -> ${after.trim()}`);
  const s = Math.max(seconds, 0.01);
  return { seconds, mbps: bytes / MB / s };
}

/**
 * CPU seconds (user + system) from GNU time's `-f '%U %S %e'` output file; time may prepend a
 * "Command exited with non-zero status" line, so the last line is read.
 * @param {string} text
 * @returns {{ cpu: number, wall: number }}
 */
function parseTimeOutput(text) {
  const last = text.trim().split('\n').pop() ?? '';
  const parts = last.trim().split(/\s+/).map(Number);
  if (parts.length !== 3 || parts.some((n) => !Number.isFinite(n))) throw new Error(`not \`time -f '%U %S %e'\` output: ${JSON.stringify(text)}`);
  const [user, sys, wall] = /** @type {[number, number, number]} */ (parts);
  return { cpu: user + sys, wall };
}

/**
 * Quotes a word for sh -c (single quotes, embedded ones closed and escaped).
 * @param {string} word
 */
const shQuote = (word) => (/^[A-Za-z0-9_./:=,@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

module.exports = { parseUptime, ioRate, parseTimeOutput, shQuote, MB };
