import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // e2e suites share one private containerd per file; files run in parallel forks.
    pool: 'forks',
    fileParallelism: true,
    reporters: ['default'],
  },
});
