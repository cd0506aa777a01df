// The layers of docs/architecture.md, checked by `npm run lint` (dependency-cruiser resolves every
// import, type-only ones included):
//   cli → server/features → http → acme/mesh → issuance → policy/validation → ca → kms → db,
//   with config and core usable by all. An import may only point down this picture.
const TOP = '^src/(server|features|context)\\.ts$';
const above = {
  core: ['config', 'db', 'kms', 'ca', 'policy', 'validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  config: ['db', 'kms', 'ca', 'policy', 'validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  db: ['kms', 'ca', 'policy', 'validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  kms: ['ca', 'policy', 'validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  ca: ['policy', 'validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  // Siblings stay apart: validation checks control of names and knows no certificates.
  policy: ['validation', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  validation: ['policy', 'ca', 'kms', 'issuance', 'acme', 'mesh', 'http', 'cli'],
  issuance: ['acme', 'mesh', 'http', 'cli'],
  acme: ['mesh', 'http', 'cli'],
  mesh: ['acme', 'http', 'cli'],
  http: ['cli'],
};

const forbidden = Object.entries(above).map(([from, targets]) => ({
  name: `${from}-imports-down-only`,
  comment: `src/${from} may not import ${targets.join(', ')} (docs/architecture.md, layers)`,
  severity: 'error',
  from: { path: `^src/${from}/` },
  to: { path: `^src/(${targets.join('|')})/` },
}));

forbidden.push({
  name: 'wiring-is-on-top',
  comment:
    'server.ts, features.ts and context.ts wire everything together; only cli, http and the features that adapt the context (acme/feature.ts, acme/deps.ts) may import them',
  severity: 'error',
  from: {
    path: '^src/',
    pathNot: ['^src/cli/', '^src/http/', TOP, '^src/acme/(feature|deps)\\.ts$'],
  },
  to: { path: TOP },
});

forbidden.push({
  name: 'no-cycles',
  comment: 'no import cycles (type-only ones included)',
  severity: 'error',
  from: { path: '^src/' },
  to: { circular: true },
});

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    includeOnly: '^src/',
  },
};
