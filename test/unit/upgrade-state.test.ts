import { describe, expect, it } from 'vitest';
import {
  decodeState, encodeState, READABLE_STATE_VERSIONS, STATE_FORMAT, STATE_VERSION, StateError, type HandoverState,
} from '../../src/common/upgrade/state';

const stdio = { stdin: '/f/in', stdout: '/f/out', stderr: '/f/err', terminal: false };

function sample(): HandoverState {
  return {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    pausedAt: 1_700_000_000_000,
    pausedAtNs: '123456789',
    fromVersion: '0.1.0',
    pid: 4242,
    identity: {
      namespace: 'default', id: 'c1', address: '/run/c.sock', publishBinary: '/usr/bin/containerd', debug: false,
      bundle: '/b/c1', ttrpcAddress: '/run/c.sock.ttrpc', protocol: 'ttrpc',
    },
    ownSocket: '/run/containerd/s/abc',
    listenerFd: 3,
    connections: [{
      fd: 4, lastStreamId: 9, buffered: Buffer.from([0, 0]).toString('base64'),
      pending: [{ streamId: 7, service: 'containerd.task.v2.Task', method: 'Wait', payload: 'CgJjMQ==', metadata: [['k', 'v']] }],
    }],
    events: [{ timestamp: 1_700_000_000_001, topic: '/tasks/exit', typeUrl: 'containerd.events.TaskExit', value: 'CgJjMQ==' }],
    containers: [{
      id: 'c1', bundle: '/b/c1', namespace: 'default', stdio, mountedRootfs: true,
      init: {
        execId: '', stdio, state: 'running', pid: 100,
        io: {
          kind: 'pipe',
          copies: [{ readFd: 5, sink: { kind: 'fifo', writerFd: 6, readerFd: 7 } }, { readFd: 8, sink: { kind: 'file', fd: 9 } }],
          stdin: { readerFd: 10, heldWriterFd: -1, pipeWriterFd: 11 },
        },
      },
      execs: [
        { execId: 'e1', stdio: { ...stdio, terminal: true }, state: 'running', pid: 101, processJson: '{}',
          io: { kind: 'pty', masterFd: 12, output: { kind: 'fifo', writerFd: 13, readerFd: 14 }, outputEnded: false, stdin: { readerFd: 15, heldWriterFd: 16 } } },
        { execId: 'e2', stdio, state: 'stopped', pid: 102, processJson: '{}', exit: { status: 3, exitedAt: 1_700_000_000_002 }, io: { kind: 'none' } },
      ],
    }],
    watchedPids: [100, 101],
    strays: [{ pid: 55, status: 0, at: 1_700_000_000_000 }],
    fds: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
  };
}

describe('hand-over state', () => {
  it('round-trips through its text form', () => {
    const s = sample();
    expect(decodeState(encodeState(s))).toEqual(s);
  });

  it('reads the version it writes', () => {
    expect(READABLE_STATE_VERSIONS).toContain(STATE_VERSION);
  });

  it('refuses another format, an unreadable version and non-JSON', () => {
    expect(() => decodeState('{')).toThrow(StateError);
    expect(() => decodeState(JSON.stringify({ ...sample(), format: 'x' }))).toThrow(/not a tshim hand-over state/);
    expect(() => decodeState(JSON.stringify({ ...sample(), version: 99 }))).toThrow(/version 99 is not readable/);
  });

  const broken: Array<[string, (s: HandoverState) => void, RegExp]> = [
    ['an fd not inherited', (s) => { s.listenerFd = 40; }, /listenerFd 40 is not among the inherited fds/],
    ['an inherited fd nobody uses', (s) => { s.fds.push(99); }, /fd 99 is inherited but used by nothing/],
    ['stdio fds', (s) => { s.fds.push(1); }, /fd must be an integer >= 3/],
    ['an even stream id', (s) => { (s.connections[0]!.pending[0]!).streamId = 6; }, /stream 6 is not a client stream/],
    ['a stream id beyond the last one seen', (s) => { (s.connections[0]!.pending[0]!).streamId = 11; }, /stream 11/],
    ['a running process without pid', (s) => { s.containers[0]!.init.pid = 0; }, /container c1: init: a running process needs a pid/],
    ['a stopped process without exit', (s) => { delete s.containers[0]!.execs[1]!.exit; }, /exec e2: a stopped process needs its exit/],
    ['an unknown state', (s) => { (s.containers[0]!.init as { state: string }).state = 'zombie'; }, /unknown state zombie/],
    ['a paused exec', (s) => { s.containers[0]!.execs[0]!.state = 'paused'; }, /an exec cannot be paused/],
    ['an exec without its process JSON', (s) => { delete s.containers[0]!.execs[0]!.processJson; }, /processJson must be a string/],
    ['duplicate exec ids', (s) => { s.containers[0]!.execs[1]!.execId = 'e1'; }, /exec e1: listed twice/],
    ['an unknown io kind', (s) => { (s.containers[0]!.init as { io: unknown }).io = { kind: 'socket' }; }, /unknown io kind socket/],
    ['bad base64', (s) => { s.events[0]!.value = '***'; }, /event value must be base64/],
    ['a grpc daemon', (s) => { (s.identity as { protocol: string }).protocol = 'grpc'; }, /protocol must be ttrpc/],
  ];
  it.each(broken)('refuses a state with %s', (_what, breakIt, message) => {
    const s = sample();
    breakIt(s);
    expect(() => decodeState(encodeState(s))).toThrow(message);
  });
});

describe('ttrpc frame decoder hand-over', () => {
  it('gives back a half-read frame byte for byte, so a new decoder continues where it stopped', async () => {
    const { FrameDecoder, encodeFrame } = await import('../../src/common/ttrpc/frame');
    const frame = encodeFrame(5, 1, 0, Buffer.from('payload-bytes'));
    for (const cut of [0, 3, 10, 12, frame.length - 1]) {
      const old = new FrameDecoder();
      expect(old.push(frame.subarray(0, cut))).toEqual([]);
      const rest = old.unconsumed();
      expect(rest).toEqual(frame.subarray(0, cut));
      const next = new FrameDecoder();
      next.push(rest);
      const items = next.push(frame.subarray(cut));
      expect(items).toHaveLength(1);
      expect(items[0]).toMatchObject({ kind: 'frame', frame: { streamId: 5, payload: Buffer.from('payload-bytes') } });
    }
  });
});

describe('upgrade command line', () => {
  it('parses the upgrade action and the check run by a daemon being upgraded', async () => {
    const { parseArgs } = await import('../../src/common/cli');
    expect(parseArgs(['-address', '/run/c.sock', 'upgrade'])).toMatchObject({ kind: 'upgrade', flags: { address: '/run/c.sock' }, socketDir: '' });
    expect(parseArgs(['-socket', '/run/containerd/s/x', '-socket-dir', '/d', 'upgrade'])).toMatchObject({
      kind: 'upgrade', flags: { socket: '/run/containerd/s/x' }, socketDir: '/d',
    });
    expect(parseArgs(['-upgrade-check', '/run/tshim/upgrade/1.json'])).toEqual({ kind: 'upgrade-check', file: '/run/tshim/upgrade/1.json' });
    // the flags every daemon launch uses (start, a hand-over, an adopted spare's title) parse back
    const { daemonFlags } = await import('../../src/common/cli');
    const args = daemonFlags({ namespace: 'n', id: 'i', address: '/a', publishBinary: '/p', debug: true });
    expect(parseArgs(args)).toEqual({
      kind: 'serve',
      flags: { namespace: 'n', id: 'i', address: '/a', publishBinary: '/p', bundle: '', socket: '', spare: '', debug: true },
    });
  });
});
