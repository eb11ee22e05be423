import { defineConfig } from 'vitest/config';

/** `npm run fuzz`: the long, by-hand fuzz run (test/fuzz/full.fuzz.ts); not part of `npm test`. */
export default defineConfig({
  test: {
    include: ['test/fuzz/*.fuzz.ts'],
    testTimeout: 4 * 3600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
