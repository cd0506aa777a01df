import { defineConfig } from 'vitest/config';

// The PKCS#11 library reads SOFTHSM2_CONF once per process and the files that use it each set up a
// token of their own: all but one run in a process of their own. `kms/roots` runs in the shared
// workers, where no other file loads the PKCS#11 module (a second one there would find the module
// already initialised on roots' token directory): it saves a worker's load of the application.
const OWN_PROCESS = ['test/kms/hsm.test.ts'];

export default defineConfig({
  test: {
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Test files mostly wait (on servers, PostgreSQL, openssl): on a 2-core machine vitest's
    // default of one worker per core less one runs the files one after another. More than two
    // timed out cases here while other suites shared the machine; on a quiet one try
    // `npm test -- --maxWorkers=4`.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'shared',
          include: ['test/**/*.test.ts'],
          exclude: ['test/interop/**', 'node_modules/**', ...OWN_PROCESS],
          // A worker runs file after file in one process: the source graph (~2.5 s of CPU to
          // import) is loaded once per worker, not once per file. Files still share nothing they
          // rely on: each makes its own database, CA and servers and closes them.
          isolate: false,
        },
      },
      { extends: true, test: { name: 'own-process', include: OWN_PROCESS } },
    ],
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
