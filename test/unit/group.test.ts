/**
 * Daemon grouping (src/common/group.ts): the policy from the runtime option or the environment,
 * the socket key per policy, and the hand-encoded ReserveRequest `start` sends (checked against
 * protobufjs with our control.proto).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Code } from '../../src/common/errors';
import { groupingKey, groupPolicy } from '../../src/common/group';
import { encodeReserveRequest } from '../../src/common/wire';
import { codec } from '../../src/common/proto';

describe('shim grouping policy', () => {
  it('the runtime option wins over TSHIM_SHIM_GROUP; both empty is pod', () => {
    expect(groupPolicy('', {})).toBe('pod');
    expect(groupPolicy('', { TSHIM_SHIM_GROUP: 'namespace' })).toBe('namespace');
    expect(groupPolicy('Container', { TSHIM_SHIM_GROUP: 'namespace' })).toBe('container');
  });

  it('an unknown policy is InvalidArgument naming where it came from', () => {
    expect(() => groupPolicy('node', {})).toThrow(expect.objectContaining({ code: Code.InvalidArgument, message: expect.stringContaining('ShimGroup') }));
    expect(() => groupPolicy('', { TSHIM_SHIM_GROUP: 'x' })).toThrow(expect.objectContaining({ message: expect.stringContaining('TSHIM_SHIM_GROUP') }));
  });

  it('keys the socket by container, by pod annotation, or one per namespace', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-group-'));
    try {
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'sb' } }));
      expect(groupingKey(dir, 'c1', 'pod')).toBe('sb');
      expect(groupingKey(dir, 'c1', 'container')).toBe('c1');
      expect(groupingKey(dir, 'c1', 'namespace')).toBe('tshim:namespace');
      expect(groupingKey(dir, 'c2', 'namespace')).toBe(groupingKey(dir, 'c1', 'namespace'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('encodes ReserveRequest as protobufjs does, long ids included', () => {
    for (const id of ['c1', 'x'.repeat(76), 'é'.repeat(100)]) {
      expect(Buffer.from(encodeReserveRequest(id))).toEqual(Buffer.from(codec<object>('tshim.v1.ReserveRequest').encode({ id })));
    }
  });
});
