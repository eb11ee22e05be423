import { describe, expect, it } from 'vitest';
import { forNodeStart, PARKED_CA_CERTS, unparkNodeEnv } from '../../src/common/node-env';

describe('NODE_EXTRA_CA_CERTS is parked while our node processes start', () => {
  it('moves a set value under the parked name, in a copy, and puts it back in place', () => {
    const env = { PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/ca.pem' };
    const started = forNodeStart(env);
    expect(started).toEqual({ PATH: '/bin', [PARKED_CA_CERTS]: '/etc/ca.pem' });
    expect(env).toEqual({ PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/ca.pem' });
    unparkNodeEnv(started);
    expect(started).toEqual(env);
  });

  it('leaves an environment without it (or with it empty, which node ignores) as it is', () => {
    for (const env of [{ PATH: '/bin' }, { PATH: '/bin', NODE_EXTRA_CA_CERTS: '' }]) {
      const started = forNodeStart(env);
      expect(started).toEqual(env);
      expect(started).not.toBe(env);
      unparkNodeEnv(started);
      expect(started).toEqual(env);
    }
  });
});
