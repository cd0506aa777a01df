import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/interop/**', 'node_modules/**'],
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Test files mostly wait (on spawned processes, servers, PostgreSQL, openssl): on a 2-core
    // machine vitest's default of one worker per core less one runs the files one after another.
    // More than two timed out cases here while other suites shared the machine; on a quiet one try
    // `npm test -- --maxWorkers=4`.
    maxWorkers: 2,
    // `npm run coverage`: what the suite runs of src/ in its own processes (code that only spawned
    // `keyward` processes run is not counted).
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary', 'html'],
      reportsDirectory: '.tmp/coverage',
    },
  },
});
