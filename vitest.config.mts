import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Files that drive containers through containerd with `ctr` or its API. They run twice: once as
 * everything does (tshim adopts spare daemons, its default) and once with spares switched off,
 * so a container behaves the same whichever way its daemon came to be.
 */
const CONTAINER_SUITES = [
  'test/e2e/run.test.ts',
  'test/e2e/tasks.test.ts',
  'test/e2e/events.test.ts',
  'test/e2e/lifecycle-extra.test.ts',
  'test/e2e/lifecycle-extra-shims.test.ts',
  'test/e2e/logging-checkpoint.test.ts',
  'test/e2e/checkpoint.test.ts',
  'test/e2e/output-eof.test.ts',
];

/**
 * The single executable (`npm run package`, out/linux-x64) in place of bin/: the lifecycle suites
 * again, with containerd finding the executable first on its PATH, plus what only the executable
 * has (sea.test.ts). globalSetup builds it when dist/ changed.
 */
const SEA_SUITES = ['test/e2e/run.test.ts', 'test/e2e/tasks.test.ts', 'test/e2e/containerd2.test.ts', 'test/e2e/demo.test.ts', 'test/e2e/sea.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // e2e suites share one private containerd per file; files run in parallel forks.
    pool: 'forks',
    fileParallelism: true,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'all', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, 'test/e2e/sea.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'e2e-sea',
          include: SEA_SUITES,
          globalSetup: ['test/e2e/fixtures/sea-setup.ts'],
          env: { TSHIM_E2E_SHIM_DIR: 'out/linux-x64', TSHIM_E2E_RUNTIMES: 'io.containerd.tshim.v2' },
        },
      },
      {
        extends: true,
        test: {
          // Every container of a namespace in one daemon (ShimGroup = namespace): the same suites
          // must not tell the difference.
          name: 'e2e-namespace-group',
          include: CONTAINER_SUITES.filter((f) => !f.includes('checkpoint')),
          env: { TSHIM_SHIM_GROUP: 'namespace', TSHIM_E2E_RUNTIMES: 'io.containerd.tshim.v2' },
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e-without-spare',
          include: CONTAINER_SUITES,
          // runc-v2 was already the reference in the first pass; this pass is about tshim alone.
          env: { TSHIM_SPARE: '0', TSHIM_E2E_RUNTIMES: 'io.containerd.tshim.v2' },
        },
      },
    ],
  },
});
