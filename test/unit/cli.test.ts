import { describe, expect, it } from 'vitest';
import { parseArgs } from '../../src/common/cli';

describe('parseArgs', () => {
  it('parses containerd 1.6 start argv', () => {
    const cmd = parseArgs(['-namespace', 'default', '-address', '/run/c.sock', '-publish-binary', '/usr/bin/containerd', '-id', 't1', '-debug', 'start']);
    expect(cmd).toEqual({
      kind: 'start',
      flags: { namespace: 'default', id: 't1', address: '/run/c.sock', publishBinary: '/usr/bin/containerd', bundle: '', socket: '', spare: '', debug: true },
    });
  });

  it('parses delete with -bundle and double-dash / equals forms', () => {
    const cmd = parseArgs(['--namespace=ns', '-id=x', '-bundle', '/b', 'delete']);
    expect(cmd.kind).toBe('delete');
    if (cmd.kind === 'delete') expect(cmd.flags).toMatchObject({ namespace: 'ns', id: 'x', bundle: '/b' });
  });

  it('no action means serve', () => {
    expect(parseArgs(['-namespace', 'n', '-id', 'i', '-address', 'a']).kind).toBe('serve');
  });

  it('-v and -version print the version', () => {
    expect(parseArgs(['-v'])).toEqual({ kind: 'version' });
    expect(parseArgs(['--version'])).toEqual({ kind: 'version' });
  });

  it('-info is recognised', () => {
    expect(parseArgs(['-info']).kind).toBe('info');
  });

  it('rejects unknown flags, unknown actions, missing values and extra words', () => {
    expect(parseArgs(['-bogus', 'start'])).toMatchObject({ kind: 'usage', error: 'flag provided but not defined: -bogus' });
    expect(parseArgs(['frobnicate'])).toMatchObject({ kind: 'usage', error: 'unknown action "frobnicate"' });
    expect(parseArgs(['-id'])).toMatchObject({ kind: 'usage', error: 'flag needs an argument: -id' });
    expect(parseArgs(['start', 'extra'])).toMatchObject({ kind: 'usage' });
    expect(parseArgs(['-debug=maybe'])).toMatchObject({ kind: 'usage' });
  });

  it('runs an idle spare daemon with -spare and ignores its -title-room', () => {
    const cmd = parseArgs(['-spare', '/run/containerd/s/tshim-spare-x', '-address', '/c.sock', '-title-room', '....']);
    expect(cmd).toMatchObject({ kind: 'spare', flags: { spare: '/run/containerd/s/tshim-spare-x', address: '/c.sock', socket: '' } });
    expect(parseArgs(['-spare', '/s', 'start']).kind).toBe('start');
  });

  it('accepts 2.x -debug-socket without failing', () => {
    expect(parseArgs(['-debug-socket', '/x', '-id', 'a', 'start']).kind).toBe('start');
  });
});
