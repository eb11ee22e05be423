/**
 * Node loads the whole NODE_EXTRA_CA_CERTS bundle while it starts, whether the program speaks TLS
 * or not: with Debian's bundle that is 50 ms of every node process here (`node -e 0`: 78 ms with
 * it, 23 ms without). A shim never speaks TLS, but containerd hands its own environment down, so
 * the node processes the shim starts itself (daemon, spare, upgraded image) get the variable parked
 * under another name, and every tshim process puts it back first thing (main.ts): the runtime,
 * hooks and logging binaries it runs see containerd's environment unchanged.
 */
const CA_CERTS = 'NODE_EXTRA_CA_CERTS';
export const PARKED_CA_CERTS = 'TSHIM_PARKED_NODE_EXTRA_CA_CERTS';

/** `env` as a node process of ours should start with: a copy, the CA bundle variable parked. */
export function forNodeStart(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { [CA_CERTS]: value, ...rest } = env;
  // An empty value makes node load nothing, so it needs no parking (and is kept as it was).
  return value === undefined || value === '' ? { ...env } : { ...rest, [PARKED_CA_CERTS]: value };
}

/** Undoes forNodeStart in place (process.env of a freshly started tshim process). */
export function unparkNodeEnv(env: NodeJS.ProcessEnv): void {
  const value = env[PARKED_CA_CERTS];
  if (value === undefined) return;
  delete env[PARKED_CA_CERTS];
  env[CA_CERTS] = value;
}
