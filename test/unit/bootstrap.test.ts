import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DAEMON_NODE_FLAGS, daemonCommand, socketAddress, startOutput, writeAddressFile,
} from '../../src/common/bootstrap';
import { groupingKey } from '../../src/common/group';

describe('bootstrap helpers', () => {
  it('derives the socket as the runc shim does (sha256 of address/ns/key)', () => {
    const expected = createHash('sha256').update('/tmp/x/c.sock/default/t1').digest('hex');
    expect(socketAddress('/tmp/x/c.sock', 'default', 't1')).toBe(`unix:///run/containerd/s/${expected}`);
  });

  it('groups by the runc group annotation, then the CRI sandbox id, else the id', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-boot-'));
    try {
      expect(groupingKey(dir, 'id1')).toBe('id1');
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'sb' } }));
      expect(groupingKey(dir, 'id1')).toBe('sb');
      fs.writeFileSync(
        path.join(dir, 'config.json'),
        JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'sb', 'io.containerd.runc.v2.group': 'g' } }),
      );
      expect(groupingKey(dir, 'id1')).toBe('g');
      writeAddressFile(dir, 'unix:///run/containerd/s/abc');
      expect(fs.readFileSync(path.join(dir, 'address'), 'utf8')).toBe('unix:///run/containerd/s/abc');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints a bare address for ttrpc and the version-3 JSON for grpc', () => {
    expect(startOutput('unix:///s', 'ttrpc')).toBe('unix:///s');
    // containerd 2.x pre-dials the gRPC address as a plain socket path (no scheme).
    expect(JSON.parse(startOutput('unix:///s', 'grpc'))).toEqual({ version: 3, address: '/s', protocol: 'grpc' });
  });
});

describe('daemonCommand', () => {
  it('runs the daemon with the daemon V8 flags right after node', () => {
    expect(daemonCommand(['/usr/bin/node', '/opt/tshim/bin/shim'], {})).toEqual(['/usr/bin/node', ...DAEMON_NODE_FLAGS, '/opt/tshim/bin/shim']);
    expect(daemonCommand(['/usr/bin/node', '--inspect-brk=0', '/s'], {})).toEqual(['/usr/bin/node', ...DAEMON_NODE_FLAGS, '--inspect-brk=0', '/s']);
  });

  it('takes TSHIM_DAEMON_NODE_FLAGS instead (empty: none), and leaves a single executable alone', () => {
    expect(daemonCommand(['/usr/bin/node', '/s'], { TSHIM_DAEMON_NODE_FLAGS: ' --jitless  --max-old-space-size=64 ' })).toEqual([
      '/usr/bin/node', '--jitless', '--max-old-space-size=64', '/s',
    ]);
    expect(daemonCommand(['/usr/bin/node', '/s'], { TSHIM_DAEMON_NODE_FLAGS: '' })).toEqual(['/usr/bin/node', '/s']);
    expect(daemonCommand(['/usr/local/bin/containerd-shim-tshim-v2'], {})).toEqual(['/usr/local/bin/containerd-shim-tshim-v2']);
  });
});
