import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// The PKCS#11 library reads SOFTHSM2_CONF once per process and the files that use it each set up a
// token of their own: all but one run in a process of their own. `kms/roots` runs in the shared
// workers, where no other file loads the PKCS#11 module (a second one there would find the module
// already initialised on roots' token directory): it saves a worker's load of the application.
const OWN_PROCESS = ['test/kms/hsm.test.ts'];

// The files that take longest on one database or the other (8-20 s each, measured), started first
// and in this order: a long file started last keeps one worker busy after the other has run out.
// vitest's own order (longest first by the last run's times, or largest file first without one)
// starts the PostgreSQL-only files last after an embedded run, where they were skipped, and on a
// fresh clone orders by size. Files not listed follow in vitest's order. The own-process file
// comes first, as vitest puts it: a shared worker that finds it at the head of the queue is ended
// rather than reused, and the next shared file then pays for a new worker's load.
const LONG_FIRST = [
  'test/kms/hsm.test.ts',
  'test/acme/crash-recovery.test.ts',
  'test/db/connection-loss.test.ts',
  'test/kms/roots.test.ts',
  'test/foundation/key-protection.test.ts',
  'test/mesh/mtls-processes.test.ts',
  'test/hostile/limits.test.ts',
  'test/observe/admin-browser.test.ts',
  'test/acme/jobs.test.ts',
  'test/kms/janitor.test.ts',
  'test/kms/lifecycle.test.ts',
  'test/foundation/cli-issue.test.ts',
  'test/kms/audit.test.ts',
  'test/kms/sealed-server.test.ts',
  'test/ca/adopt.test.ts',
];

class LongFilesFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (spec: TestSpecification) => {
      const i = LONG_FIRST.findIndex((file) => spec.moduleId.endsWith(`/${file}`));
      return i < 0 ? LONG_FIRST.length : i;
    };
    const sorted = await super.sort(files);
    return sorted
      .map((spec, i) => ({ spec, i, rank: rank(spec) }))
      .sort((a, b) => a.rank - b.rank || a.i - b.i)
      .map(({ spec }) => spec);
  }
}

export default defineConfig({
  test: {
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    sequence: { sequencer: LongFilesFirst },
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
