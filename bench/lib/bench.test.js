// @ts-check
'use strict';
/**
 * Checks for the benchmark's own logic (statistics, argument parsing, wire helpers, table
 * layout, process matching), runnable without root or containerd: `node --test bench/`.
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { quantileSorted, summarize, ratio } = require('./stats');
const { parseArgs, UsageError } = require('./options');
const { encodeIdRequest, decodeShimPid } = require('./shim-direct');
const { shimDaemonMatcher } = require('./memory');
const { isStaticElf } = require('./image');
const { Results } = require('./results');
const { isRunning } = require('./proc');

test('quantiles interpolate between ranks', () => {
  assert.equal(quantileSorted([1, 2, 3, 4], 0.5), 2.5);
  assert.equal(quantileSorted([10], 0.9), 10);
  // 10 samples 1..10: rank 0.9*9 = 8.1 -> 9 + 0.1*(10-9)
  assert.ok(Math.abs(quantileSorted([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) - 9.1) < 1e-9);
  assert.throws(() => quantileSorted([], 0.5), RangeError);
  assert.throws(() => quantileSorted([1], 1.5), RangeError);
});

test('summarize sorts a copy and reports median, p90, mean, min, max', () => {
  const samples = [5, 1, 3];
  assert.deepEqual(summarize(samples), { n: 3, median: 3, p90: 4.6, mean: 3, min: 1, max: 5 });
  assert.deepEqual(samples, [5, 1, 3]);
  assert.equal(summarize([]), undefined);
});

test('ratio is tshim over runc and undefined without both sides', () => {
  assert.equal(ratio(30, 10), 3);
  assert.equal(ratio(undefined, 10), undefined);
  assert.equal(ratio(5, undefined), undefined);
  assert.equal(ratio(5, 0), undefined);
});

test('parseArgs: defaults, both value spellings, and rejections', () => {
  assert.deepEqual(parseArgs([]), { iterations: 20, containers: 10, warmup: 2, settleMs: 2000, json: false, noCri: false, help: false });
  const o = parseArgs(['--iterations', '5', '--containers=3', '--json', '--warmup', '0', '--settle-ms=100', '--no-cri']);
  assert.deepEqual(o, { iterations: 5, containers: 3, warmup: 0, settleMs: 100, json: true, noCri: true, help: false });
  assert.throws(() => parseArgs(['--no-cri=1']), UsageError);
  assert.equal(parseArgs(['-h']).help, true);
  assert.throws(() => parseArgs(['--iterations', '0']), UsageError);
  assert.throws(() => parseArgs(['--iterations']), UsageError);
  assert.throws(() => parseArgs(['--containers', '2.5']), UsageError);
  assert.throws(() => parseArgs(['--json=yes']), UsageError);
  assert.throws(() => parseArgs(['--bogus']), UsageError);
});

test('Connect/Shutdown request encoding and ConnectResponse decoding', () => {
  assert.deepEqual([...encodeIdRequest('ab')], [0x0a, 2, 0x61, 0x62]);
  // shim_pid 1 = 300 (varint ac 02), task_pid 2 = 7, version 3 = "x"
  assert.equal(decodeShimPid(Buffer.from([0x08, 0xac, 0x02, 0x10, 0x07, 0x1a, 0x01, 0x78])), 300);
  // field order is not guaranteed: version before shim_pid
  assert.equal(decodeShimPid(Buffer.from([0x1a, 0x01, 0x78, 0x08, 0x05])), 5);
  assert.equal(decodeShimPid(Buffer.alloc(0)), 0);
  assert.throws(() => decodeShimPid(Buffer.from([0x08, 0x80])), /truncated/);
});

test('shim daemons are told apart from helpers, other runtimes and other containerds', () => {
  const match = shimDaemonMatcher('containerd-shim-tshim-v2', '/tmp/tsb-x/c.sock', 'ns1');
  const node = ['/usr/bin/node', '/repo/bin/containerd-shim-tshim-v2'];
  const daemon = [...node, '-namespace', 'ns1', '-id', 'a', '-address', '/tmp/tsb-x/c.sock'];
  assert.equal(match(daemon), true);
  assert.equal(match([...daemon, '-publish-binary', '/usr/bin/containerd', 'start']), false);
  assert.equal(match([...daemon.slice(0, -1), '/run/containerd/containerd.sock']), false);
  assert.equal(match([...node, '-namespace', 'other', '-id', 'a', '-address', '/tmp/tsb-x/c.sock']), false);
  assert.equal(match(['/usr/bin/containerd-shim-runc-v2', ...daemon.slice(2)]), false);
  const runc = shimDaemonMatcher('containerd-shim-runc-v2', '/tmp/tsb-x/c.sock', 'ns1');
  assert.equal(runc(['/usr/bin/containerd-shim-runc-v2', ...daemon.slice(2)]), true);
});

test('isStaticElf accepts only ELF files without an interpreter', () => {
  assert.equal(isStaticElf(Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80, ' '))), false);
  assert.equal(isStaticElf(fs.readFileSync(process.execPath)), false, 'node is dynamically linked');
  const busybox = '/bin/busybox';
  if (fs.existsSync(busybox)) {
    const bytes = fs.readFileSync(busybox);
    // Debian ships both a dynamic and a static busybox under this name; only check consistency.
    assert.equal(isStaticElf(bytes), !bytes.includes(Buffer.from('/lib64/ld-linux')));
  }
});

test('isRunning sees this process and not an unused pid', () => {
  assert.equal(isRunning(process.pid), true);
  assert.equal(isRunning(0x3fffffff), false);
});

test('the table aligns columns, blanks p90/mean of totals and lists failures', () => {
  const r = new Results([
    { id: 'a', label: 'latency', unit: 'ms', kind: 'samples' },
    { id: 'b', label: 'total memory', unit: 'MiB', kind: 'value' },
  ]);
  for (const v of [10, 20, 30]) r.add('a', 'runc', v);
  for (const v of [20, 40, 60]) r.add('a', 'tshim', v);
  r.fail('a', 'tshim', new Error('boom\nsecond line'));
  r.add('b', 'runc', 12.34);
  r.add('b', 'tshim', 49.36);
  r.note('something odd');
  const lines = r.toTable(['header']).split('\n');
  const row = lines.find((l) => l.startsWith('latency')) ?? '';
  assert.match(row, /latency\s+ms\s+20\.0\s+28\.0\s+20\.0\s+40\.0\s+56\.0\s+40\.0\s+2\.00x\s+2\.00x\s+3\/3\(1 failed\)/);
  const total = lines.find((l) => l.startsWith('total memory')) ?? '';
  assert.match(total, /total memory\s+MiB\s+12\.3\s+49\.4\s+4\.00x$/);
  // Every numeric column ends at the same offset on every row.
  const header = lines.find((l) => l.startsWith('metric')) ?? '';
  assert.equal(row.indexOf('20.0') + 4, header.indexOf('median') + 'median'.length);
  assert.ok(lines.includes('  latency [tshim] 1x, first: boom'));
  assert.ok(lines.includes('  something odd'));
  const json = r.toJSON({ iterations: 3 });
  assert.equal(json.iterations, 3);
  assert.equal(json.rows[0]?.ratioMedian, 2);
  assert.equal(json.rows[1]?.ratioMean, null);
  assert.deepEqual(json.rows[0]?.failures.tshim, ['boom\nsecond line']);
});
