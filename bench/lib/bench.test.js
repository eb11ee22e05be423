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
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { parseArgs, UsageError, QUICK, PHASES } = require('./options');
const { spareSocketOf, probeSpare } = require('./spare');
const { parseUptime, ioRate, parseTimeOutput, shQuote } = require('./io');
const { evaluateTargets, targetLines } = require('./targets');
const { encodeIdRequest, decodeShimPid } = require('./shim-direct');
const { shimDaemonMatcher } = require('./memory');
const { isStaticElf } = require('./image');
const { Results } = require('./results');
const { isRunning, argvOf, runsProgram, parseSmapsRollup, memoryOf, parseStatCpu, cpuSecondsOf } = require('./proc');

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

test('parseArgs: defaults, both value spellings, --quick, and rejections', () => {
  const defaults = parseArgs([], 'R');
  assert.deepEqual(defaults, {
    iterations: 12, containers: 10, grouped: 10, warmup: 2, settleMs: 2000, burst: 20, burstRounds: 2, pods: 20,
    ioMiB: 1024, ioTtyMiB: 256, ioSamples: 1, only: PHASES, out: 'R', quick: false, json: false, noCri: false, noIo: false, help: false,
  });
  const o = parseArgs(['--iterations', '5', '--containers=3', '--json', '--warmup', '0', '--settle-ms=100', '--no-cri', '--io-mib', '8', '--out', '', '--no-io']);
  assert.equal(o.iterations, 5);
  assert.equal(o.containers, 3);
  assert.equal(o.warmup, 0);
  assert.equal(o.settleMs, 100);
  assert.equal(o.ioMiB, 8);
  assert.equal(o.out, '');
  assert.ok(o.json && o.noCri && o.noIo);
  // --quick shrinks what was not given explicitly, wherever it appears
  const q = parseArgs(['--io-mib', '512', '--quick', '--pods=2']);
  assert.equal(q.quick, true);
  assert.equal(q.ioMiB, 512);
  assert.equal(q.pods, 2);
  assert.equal(q.iterations, QUICK.iterations);
  assert.equal(q.burst, 20, 'a burst stays 20 wide in quick mode');
  assert.equal(q.ioTtyMiB, QUICK.ioTtyMiB);
  assert.deepEqual(parseArgs(['--only', 'io, cri']).only, ['io', 'cri']);
  assert.throws(() => parseArgs(['--only', 'io,bogus']), /not bogus/);
  assert.throws(() => parseArgs(['--only=']), UsageError);
  assert.throws(() => parseArgs(['--no-cri=1']), UsageError);
  assert.equal(parseArgs(['-h']).help, true);
  assert.throws(() => parseArgs(['--iterations', '0']), UsageError);
  assert.throws(() => parseArgs(['--grouped', '1']), UsageError);
  assert.throws(() => parseArgs(['--iterations']), UsageError);
  assert.throws(() => parseArgs(['--out']), UsageError);
  assert.throws(() => parseArgs(['--containers', '2.5']), UsageError);
  assert.throws(() => parseArgs(['--json=yes']), UsageError);
  assert.throws(() => parseArgs(['--bogus']), UsageError);
});

test('argvOf splits a NUL argv, and a retitled process (an adopted spare) on spaces', () => {
  assert.deepEqual(argvOf(Buffer.from('/usr/bin/node\0/r/bin/x\0-id\0a b\0')), ['/usr/bin/node', '/r/bin/x', '-id', 'a b']);
  const title = 'containerd-shim-tshim-v2 -namespace ns1 -id c1 -address /tmp/tsb-x/c.sock';
  const argv = argvOf(Buffer.concat([Buffer.from(title), Buffer.alloc(40)]));
  assert.deepEqual(argv, title.split(' '));
  const match = shimDaemonMatcher('containerd-shim-tshim-v2', '/tmp/tsb-x/c.sock', 'ns1');
  assert.equal(match(argv), true, 'an adopted spare is counted as a shim daemon');
  const launched = ['/usr/bin/node', '--max-semi-space-size=1', '/repo/bin/containerd-shim-tshim-v2', '-namespace', 'ns1', '-id', 'c2', '-address', '/tmp/tsb-x/c.sock'];
  assert.equal(match(launched), true, 'a daemon launched with node flags before its script is counted too');
  assert.equal(match([...launched, 'start']), false, 'a start helper is not a daemon');
  assert.deepEqual(argvOf(Buffer.alloc(0)), []);
});

test('parseSmapsRollup reads every kB field and sums repeated ones', () => {
  const text = [
    '55d0c0a00000-7ffd1b5fe000 ---p 00000000 00:00 0                          [rollup]',
    'Rss:               41236 kB',
    'Pss:               12345 kB',
    'Pss_Anon:           6000 kB',
    'Shared_Clean:      30000 kB',
    'Private_Dirty:      6512 kB',
    'Swap:                  0 kB',
    'Private_Dirty:        10 kB',
  ].join('\n');
  const r = parseSmapsRollup(text);
  assert.equal(r['Pss'], 12345);
  assert.equal(r['Pss_Anon'], 6000);
  assert.equal(r['Private_Dirty'], 6522);
  assert.equal(r['Rss'], 41236);
  assert.equal(r['Nothing'], undefined);
  const self = memoryOf(process.pid);
  assert.ok(self && self.rssKiB > 0);
  if (fs.existsSync('/proc/self/smaps_rollup')) assert.ok((self?.privateDirtyKiB ?? 0) > 0 && (self?.pssKiB ?? 0) > 0);
});

test('spareSocketOf finds idle spares of one containerd only', () => {
  const spare = ['/usr/bin/node', '/r/bin/containerd-shim-tshim-v2', '-spare', '/run/containerd/s/tshim-spare-ab', '-address', '/tmp/tsb-x/c.sock', '-title-room', '....'];
  assert.equal(spareSocketOf(spare, '/tmp/tsb-x/c.sock'), '/run/containerd/s/tshim-spare-ab');
  assert.equal(spareSocketOf(spare, '/tmp/tsb-y/c.sock'), undefined);
  const daemon = ['containerd-shim-tshim-v2', '-namespace', 'n', '-id', 'c', '-address', '/tmp/tsb-x/c.sock'];
  assert.equal(spareSocketOf(daemon, '/tmp/tsb-x/c.sock'), undefined);
  assert.equal(spareSocketOf(['-spare', 'relative', '-address', '/a'], '/a'), undefined);
});

test('probeSpare: true once a line comes back, false on silence or no listener', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-spare-'));
  try {
    const answering = path.join(dir, 'a.sock');
    const silent = path.join(dir, 's.sock');
    const a = net.createServer((c) => c.once('data', () => c.end('{"ok":false,"code":"INVALID","message":""}\n')));
    /** @type {net.Socket[]} */ const held = [];
    const s = net.createServer((c) => held.push(c));
    await new Promise((r) => a.listen(answering, () => r(undefined)));
    await new Promise((r) => s.listen(silent, () => r(undefined)));
    assert.equal(await probeSpare(answering, 2000), true);
    assert.equal(await probeSpare(silent, 200), false);
    assert.equal(await probeSpare(path.join(dir, 'none.sock'), 200), false);
    for (const c of held) c.destroy();
    a.close();
    s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('IO helpers: uptime rate, GNU time output, shell quoting', () => {
  assert.equal(parseUptime('12345.67 890.12\n'), 12345.67);
  assert.throws(() => parseUptime(''), /uptime/);
  const r = ioRate(1e9, '100.00 1.0', '102.00 1.0');
  assert.equal(r.seconds, 2);
  assert.equal(r.mbps, 500);
  // below the 10 ms resolution the interval counts as 10 ms, never as zero
  assert.equal(ioRate(1e6, '5.00 0', '5.00 0').mbps, 100);
  assert.throws(() => ioRate(1, '6.00', '5.00'), /backwards/);
  assert.deepEqual(parseTimeOutput('0.52 1.25 3.10\n'), { cpu: 1.77, wall: 3.1 });
  assert.deepEqual(parseTimeOutput('Command exited with non-zero status 1\n0.10 0.20 0.50\n'), { cpu: 0.30000000000000004, wall: 0.5 });
  assert.throws(() => parseTimeOutput('garbage'), /time/);
  assert.equal(shQuote('/usr/bin/ctr'), '/usr/bin/ctr');
  assert.equal(shQuote("it's a b"), `'it'\\''s a b'`);
  assert.equal(shQuote('type=bind,src=/x,dst=/out,options=rbind:rw'), 'type=bind,src=/x,dst=/out,options=rbind:rw');
});

test('targets: ratios both ways, absolute limits, a floor plus margin, and missing sides', () => {
  /** @type {Record<string, { unit: string, runc?: number, tshim?: number }>} */
  const m = {
    a: { unit: 'ms', runc: 100, tshim: 140 },
    b: { unit: 'MB/s', runc: 1000, tshim: 800 },
    c: { unit: 'MiB', tshim: 9 },
    s: { unit: 'ms', runc: 5, tshim: 50 },
    f: { unit: 'ms', runc: 1, tshim: 45 },
    z: { unit: 'ms', runc: 0, tshim: 3 },
  };
  const res = evaluateTargets([
    { label: 'A', kind: 'ratioMax', row: 'a', limit: 1.5 },
    { label: 'B', kind: 'ratioMin', row: 'b', limit: 1.0 },
    { label: 'C', kind: 'tshimMax', row: 'c', limit: 8 },
    { label: 'S', kind: 'overRowMax', row: 's', base: 'f', limit: 10 },
    { label: 'M', kind: 'ratioMax', row: 'missing', limit: 1 },
    { label: 'Z', kind: 'ratioMax', row: 'z', limit: 1 },
  ], (id) => m[id]);
  assert.deepEqual(res.map((r) => r.verdict), ['met', 'missed by 0.20x', 'missed by 1.0 MiB', 'met', 'not measured', 'not measured']);
  assert.ok(Math.abs((res[0]?.measured ?? 0) - 1.4) < 1e-9);
  assert.equal(res[3]?.measured, 5);
  assert.equal(res[1]?.target, '>= 1.00x');
  const lines = targetLines(res);
  assert.equal(lines.length, 6);
  assert.match(lines[1] ?? '', /B\s+>= 1\.00x\s+0\.80x\s+missed by 0\.20x/);
  // every target names a row the bench declares
  const { TARGETS } = require('./targets');
  assert.ok(TARGETS.every((t) => typeof t.row === 'string' && t.limit > 0));
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

test('runsProgram tells the forms of tshim apart by path, after a daemon V8 flag, and any form by name', () => {
  const launcher = '/repo/bin/containerd-shim-tshim-v2';
  const sea = '/repo/out/linux-x64/containerd-shim-tshim-v2';
  const flags = ['-namespace', 'ns1', '-id', 'a', '-address', '/tmp/tsb-x/c.sock'];
  const launched = ['/usr/bin/node', '--max-semi-space-size=1', launcher, ...flags];
  const seaDaemon = [sea, ...flags];
  assert.equal(runsProgram(launched, launcher), true);
  assert.equal(runsProgram(launched, sea), false);
  assert.equal(runsProgram(seaDaemon, sea), true);
  assert.equal(runsProgram(seaDaemon, launcher), false);
  assert.equal(runsProgram(seaDaemon, 'containerd-shim-tshim-v2'), true);
  assert.equal(runsProgram(['/usr/bin/node', '/x/other', '-id', launcher], launcher), false, 'a path in a later argument is not the program');
  const match = shimDaemonMatcher(sea, '/tmp/tsb-x/c.sock', 'ns1');
  assert.equal(match(seaDaemon), true);
  assert.equal(match(launched), false);
  assert.equal(shimDaemonMatcher(launcher, '/tmp/tsb-x/c.sock', 'ns1')(launched), true, 'a launched daemon with its V8 flag');
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

test('parseStatCpu adds utime and stime after a command name with spaces and parens', () => {
  // fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  const stat = '4242 (node ) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0 123 456 789';
  assert.equal(parseStatCpu(stat), 3.25);
  assert.throws(() => parseStatCpu('1 (x) S 1'), /stat/);
  const own = cpuSecondsOf(process.pid);
  assert.ok(own !== undefined && own >= 0);
  assert.equal(cpuSecondsOf(0x3fffffff), undefined);
});

test('markdown rendering of a results document: medians, ratios, targets', () => {
  const { toMarkdown } = require('../markdown');
  const r = new Results([
    { id: 'a', label: 'x | y', unit: 'ms', kind: 'samples' },
    { id: 'b', label: 'none', unit: 'ms', kind: 'samples' },
  ]);
  for (const v of [10, 20, 30]) r.add('a', 'runc', v);
  for (const v of [200, 400]) r.add('a', 'tshim', v);
  const md = toMarkdown(r.toJSON({ targets: [{ label: 'A', target: '<= 1.50x', measured: 15, unit: 'x', verdict: 'missed by 13.50x' }] }));
  assert.match(md, /\| x \\\| y \| 20\.0 ms \| 300 ms \| 15\.00x \|/);
  assert.ok(!md.includes('| none |'), 'rows without samples are left out');
  assert.match(md, /\| A \| <= 1\.50x \| 15\.00x \| missed by 13\.50x \|/);
});
