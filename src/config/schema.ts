import { z } from 'zod';

import { parseDuration } from './duration.ts';

// `format` names the type in docs/settings.md (written like 90s, 15m, 24h, 7d).
const duration = z
  .string()
  .meta({ format: 'duration' })
  .transform((value, ctx) => {
    try {
      return parseDuration(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

const listen = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:8443');

export const caKeyType = z.enum(['ecdsa-p256', 'ecdsa-p384', 'rsa-3072', 'rsa-4096']);
export type CaKeyType = z.infer<typeof caKeyType>;

export const subjectKeyType = z.enum(['ecdsa-p256', 'ecdsa-p384', 'rsa', 'ed25519']);
export type SubjectKeyType = z.infer<typeof subjectKeyType>;

export const sanType = z.enum(['dns', 'ip', 'uri', 'email']);
export type SanType = z.infer<typeof sanType>;

const extKeyUsage = z.enum(['serverAuth', 'clientAuth', 'codeSigning', 'emailProtection']);

export const profileSchema = z
  .object({
    description: z.string().optional().describe('What the profile is for (shown to ACME clients in meta.profiles).'),
    extKeyUsages: z.array(extKeyUsage).min(1).describe('Extended key usages of its certificates.'),
    defaultLifetime: duration.prefault('24h').describe('Lifetime when the request names none.'),
    maxLifetime: duration.prefault('24h').describe('Longest lifetime a request may ask for.'),
    keyTypes: z
      .array(subjectKeyType)
      .default(['ecdsa-p256', 'ecdsa-p384', 'rsa', 'ed25519'])
      .describe('Subject key types accepted in CSRs.'),
    minRsaBits: z.number().int().min(2048).default(2048).describe('Smallest RSA modulus accepted.'),
    certificatePolicies: z
      .array(z.string().regex(/^[0-2](\.(0|[1-9]\d*))+$/, 'expected a dotted OID, e.g. 2.23.140.1.2.1'))
      .default([])
      .describe('Certificate policy OIDs written into every certificate of the profile.'),
    sanTypes: z.array(sanType).default(['dns', 'ip']).describe('Subject alternative name types allowed.'),
    maxNames: z.number().int().min(1).max(1000).default(100).describe('Most names in one certificate.'),
    mustStaple: z
      .boolean()
      .default(true)
      .describe(
        'Honour a CSR that asks for OCSP must-staple (TLS feature status_request, RFC 7633; certbot --must-staple) when the certificate carries an OCSP URL. false, or a certificate under passive revocation: such a CSR is refused with badCSR, never signed without the extension.',
      ),
    passiveRevocationAtOrBelow: duration
      .optional()
      .describe(
        "Passive revocation (step-ca's default for short-lived certificates): a certificate whose lifetime is at or below this carries no CRL or OCSP URL, and expiry does the work; revoking it is still recorded. Unset: always active.",
      ),
  })
  .strict()
  .refine((p) => p.defaultLifetime <= p.maxLifetime, {
    message: 'defaultLifetime must not exceed maxLifetime',
    path: ['defaultLifetime'],
  });
export type Profile = z.infer<typeof profileSchema> & { name: string };

const rootOfTrust = z.discriminatedUnion('type', [
  z.object({ type: z.literal('file'), path: z.string().optional() }).strict(),
  z
    .object({
      type: z.literal('passphrase'),
      env: z
        .string()
        .default('KEYWARD_PASSPHRASE')
        .describe('Name of the environment variable holding the passphrase (never the passphrase itself).'),
    })
    .strict(),
  /**
   * M-of-N: the root key is split into `shares` shares at `keyward init`, any `threshold` of which
   * open it. Each start is sealed until `keyward unseal` has collected the threshold.
   */
  z
    .object({
      type: z.literal('shares'),
      threshold: z.number().int().min(2).max(32).default(3),
      shares: z.number().int().min(2).max(32).default(5),
    })
    .strict()
    .refine((r) => r.shares >= r.threshold, { message: 'shares must be at least threshold', path: ['shares'] }),
]);

const caKeySpec = (keyType: CaKeyType, commonName: string, lifetime: string) =>
  z
    .object({
      keyType: caKeyType.default(keyType).describe('Key algorithm of this CA key.'),
      commonName: z.string().min(1).default(commonName).describe('Subject common name of the CA certificate.'),
      lifetime: duration.prefault(lifetime).describe('Validity of the CA certificate.'),
      nameConstraints: z
        .object({
          permittedDns: z
            .array(z.string().min(1))
            .default([])
            .describe(
              'Name constraints (intermediate, written at init and enforced at issuance): DNS names permitted, each with its subdomains.',
            ),
          excludedDns: z.array(z.string().min(1)).default([]).describe('DNS names (and subdomains) excluded.'),
          permittedIp: z
            .array(z.string().regex(/^[0-9a-fA-F:.]+\/\d{1,3}$/, 'expected a CIDR, e.g. 10.0.0.0/8'))
            .default([])
            .describe('IP ranges (CIDR) permitted.'),
          excludedIp: z
            .array(z.string().regex(/^[0-9a-fA-F:.]+\/\d{1,3}$/, 'expected a CIDR, e.g. 10.0.0.0/8'))
            .default([])
            .describe('IP ranges (CIDR) excluded.'),
        })
        .strict()
        .optional(),
    })
    .strict()
    .prefault({});

export const configSchema = z
  .object({
    dataDir: z
      .string()
      .default('./data')
      .describe(
        'Data directory: embedded database, root key file, admin socket (KEYWARD_DATA_DIR and --data-dir override it).',
      ),
    database: z
      .object({
        url: z
          .string()
          .url()
          .optional()
          .describe('PostgreSQL URL; unset (and no DATABASE_URL): the embedded database in dataDir.'),
        urlFile: z
          .string()
          .min(1)
          .optional()
          .describe(
            'A file holding the PostgreSQL URL (a Docker or Kubernetes secret), so the password is in no setting.',
          ),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        listen: listen
          .default('127.0.0.1:8080')
          .describe('Plain HTTP listener: /health, /roots.pem, CRLs, OCSP, /metrics.'),
        publicUrl: z
          .string()
          .url()
          .optional()
          .describe(
            'URL clients reach the HTTP listener at, written into certificates (CRL, OCSP, caIssuers); required with a wildcard listen address.',
          ),
      })
      .strict()
      .prefault({}),
    https: z
      .object({
        listen: listen.default('127.0.0.1:8443').describe('HTTPS listener: ACME, the mesh API, the data-key API.'),
        hostnames: z
          .array(z.string().min(1))
          .min(1)
          .default(['localhost', '127.0.0.1'])
          .describe(
            "Names and addresses in the HTTPS listener's own certificate (single labels such as keyward are fine); the first one forms the URLs.",
          ),
        publicUrl: z
          .string()
          .url()
          .optional()
          .describe(
            'URL clients reach the HTTPS listener at (ACME directory and links); default https://<first hostname>:<port>.',
          ),
      })
      .strict()
      .prefault({}),
    rootOfTrust: rootOfTrust
      .default({ type: 'file' })
      .describe(
        'What wraps the key encryption keys: a key file (path, default <dataDir>/root.key), a passphrase (scrypt), or M-of-N shares (threshold of shares; keyward init hands them out, every start is sealed until keyward unseal has the threshold). PKCS#11 and AWS KMS roots are set with keyward kms rotate-root.',
      ),
    ca: z
      .object({
        organization: z.string().default('Keyward').describe("Organization in the CA certificates' subjects."),
        root: caKeySpec('ecdsa-p384', 'Keyward Root CA', '87600h'),
        intermediate: caKeySpec('ecdsa-p256', 'Keyward Intermediate CA', '43800h'),
        /** When issuers are due, and the job in `serve` that renews intermediates (src/ca/issuer-renewal.ts). */
        renewal: z
          .object({
            shareLeft: z
              .number()
              .gt(0)
              .lt(1)
              .default(1 / 3)
              .describe(
                'An issuer is due for renewal when less than this share of its life (default a third) remains, or less than timeLeft, whichever comes first: /health turns degraded, the log and ca issuers warn, and intermediates are rotated automatically.',
              ),
            timeLeft: duration
              .prefault('180d')
              .describe(
                'An issuer is due for renewal when less than this remains (or less than shareLeft of its life).',
              ),
            automatic: z
              .boolean()
              .default(true)
              .describe(
                'keyward serve rotates an active intermediate once it is due, as keyward ca rotate-intermediate does (one replica does it; audited as keyward:issuer-renewal). Roots are never rotated automatically, only warned about. false: warn only.',
              ),
            checkInterval: duration
              .prefault('24h')
              .describe(
                'How often serve checks the issuers (also at start): logs one warning per issuer due for renewal and rotates due intermediates.',
              ),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    acme: z
      .object({
        termsOfService: z.string().url().optional().describe("Terms of service URL in the ACME directory's meta."),
        website: z.string().url().optional().describe("Website URL in the ACME directory's meta."),
        caaIdentities: z
          .array(z.string().min(1))
          .default(['keyward.internal'])
          .describe('Issuer domain names this CA answers to in CAA records (RFC 8659).'),
        externalAccountRequired: z
          .boolean()
          .default(false)
          .describe('Refuse ACME accounts without an External Account Binding (keyward eab create).'),
        defaultProfile: z.string().default('tls-server').describe('Profile used when a newOrder names none.'),
        profiles: z
          .array(z.string())
          .optional()
          .describe('Profiles offered to ACME clients (meta.profiles); default all configured profiles.'),
        nonceLifetime: duration.prefault('30m').describe('How long a Replay-Nonce stays usable.'),
        orderLifetime: duration.prefault('24h').describe('How long an order stays open.'),
        authorizationLifetime: duration.prefault('24h').describe('How long a pending authorization stays open.'),
        authorizationReuse: duration
          .prefault('24h')
          .describe('How long a valid authorization is reused for new orders of the same account.'),
        caaRecheckAfter: duration
          .prefault('7h')
          .describe(
            'At finalize, CAA is checked again for names validated longer ago than this (Baseline Requirements: 8 h).',
          ),
        maxIdentifiersPerOrder: z
          .number()
          .int()
          .min(1)
          .max(1000)
          .default(100)
          .describe('Most identifiers in one order.'),
        maxRequestBytes: z
          .number()
          .int()
          .min(4096)
          .max(1_048_576)
          .default(65_536)
          .describe('Largest ACME request body accepted.'),
      })
      .strict()
      .prefault({}),
    validation: z
      .object({
        httpPort: z
          .number()
          .int()
          .min(1)
          .max(65535)
          .default(80)
          .describe(
            'Port Keyward connects to for http-01 (RFC 8555 8.3 says 80; a chosen port lets clients run unprivileged).',
          ),
        tlsAlpnPort: z
          .number()
          .int()
          .min(1)
          .max(65535)
          .default(443)
          .describe('Port Keyward connects to for tls-alpn-01.'),
        dnsResolver: z
          .string()
          .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+)(:\d{1,5})?$/, 'expected host:port')
          .optional()
          .describe(
            "host:port of the DNS server Keyward resolves every validated name through (A/AAAA, CNAME, TXT, CAA); /etc/hosts is not read. Default: the system's resolvers.",
          ),
        timeout: duration.prefault('10s').describe('Time-out of one validation attempt.'),
        retryFor: duration
          .prefault('20s')
          .describe(
            'How long a check failing for network reasons (connection refused or timed out, DNS lookup failed) is retried with back-off before the challenge turns invalid; any other failure (wrong answer, 404, no TXT record, TLS, CAA) is final at once. The default lets clients that give up after ~30 s (certbot) see the reason; lengthen it for flaky networks.',
          ),
        maxRedirects: z.number().int().min(0).max(20).default(10).describe('Redirects followed during http-01.'),
        maxBodyBytes: z
          .number()
          .int()
          .min(256)
          .max(1_048_576)
          .default(8192)
          .describe('Largest http-01 response body read.'),
        caa: z.boolean().default(true).describe('Check CAA records before issuing (RFC 8659).'),
        concurrency: z
          .number()
          .int()
          .min(1)
          .max(256)
          .default(16)
          .describe('Checks one replica runs at once; they wait on the network, not the CPU.'),
      })
      .strict()
      .prefault({}),
    revocation: z
      .object({
        crlPublishDelay: duration.prefault('60s').describe('A CRL is published at most this long after a revocation.'),
        crlValidity: duration.prefault('24h').describe('nextUpdate of a CRL, after its thisUpdate.'),
        ocspValidity: duration.prefault('12h').describe('nextUpdate of an OCSP response, after its thisUpdate.'),
        crlShards: z
          .number()
          .int()
          .min(1)
          .max(1024)
          .default(1)
          .describe(
            'CRL shards per issuer (Boulder style); a certificate keeps the shard it got at issuance, so changing this affects only new certificates.',
          ),
        ocspSigner: z
          .enum(['delegated', 'issuer'])
          .default('delegated')
          .describe(
            'Who signs OCSP responses: a delegated responder certificate per issuer, or the issuer key itself (needs a key policy that allows sign-ocsp).',
          ),
        ocspSignerLifetime: duration
          .prefault('168h')
          .describe('Lifetime of a delegated responder certificate (it carries ocsp-nocheck); renewed at half-life.'),
        ocspNonce: z
          .enum(['echo', 'ignore'])
          .default('echo')
          .describe(
            'echo signs a fresh response for a request with a nonce (RFC 8954); ignore always serves the pre-signed one (RFC 5019 2.1.2), so no request can force a signature.',
          ),
        ariRetryAfter: duration
          .prefault('6h')
          .describe('Retry-After on ACME Renewal Information answers (RFC 9773 4.3).'),
      })
      .strict()
      .prefault({}),
    profilesDir: z
      .string()
      .default('profiles')
      .describe('Directory of profile files (NAME.yaml), relative to the configuration file.'),
    profiles: z
      .record(z.string().regex(/^[a-z0-9][a-z0-9-]*$/), profileSchema)
      .default({})
      .describe('Profiles defined inline, by name (see Profiles below); they override files of the same name.'),
    kms: z
      .object({
        autoRotateDays: z
          .number()
          .int()
          .min(1)
          .optional()
          .describe('Rotate KEKs whose primary version is older than this many days (per-KEK settings win).'),
        janitorInterval: duration
          .prefault('60s')
          .describe('How often the KMS janitor runs (deletions, automatic rotation).'),
        checkpointEveryEvents: z
          .number()
          .int()
          .min(1)
          .default(1_000)
          .describe(
            'Sign an audit checkpoint after this many events, or checkpointInterval after the last one: the events after the newest checkpoint are vouched for by the chain key alone.',
          ),
        checkpointInterval: duration.prefault('1m').describe('See checkpointEveryEvents.'),
        dualControl: z
          .boolean()
          .default(false)
          .describe(
            'Two-person control: trust-changing commands (kms schedule-deletion, kms rotate-root, disabling a CA key, importing a root key) only propose; a different administrator runs keyward proposals approve ID within dualControlWindow.',
          ),
        dualControlWindow: duration
          .prefault('24h')
          .describe('How long a dual-control proposal can be approved before it expires.'),
        checkpointExport: z
          .string()
          .min(1)
          .default('audit-checkpoints.jsonl')
          .describe(
            'Where each new checkpoint is also written, outside the database: a file (JSON lines, relative to dataDir; ship it to WORM storage) or - for standard output.',
          ),
        /**
         * The PKCS#11 token that holds keys made with protection "hsm" (generated there, never
         * extractable; signatures are made in the token). The PIN is read from pinFile (relative
         * to dataDir) when a session logs in.
         */
        hsm: z
          .object({
            module: z
              .string()
              .min(1)
              .describe(
                'kms.hsm: the PKCS#11 token for keys made with protection hsm (generated there, never extractable): path of the module.',
              ),
            token: z.string().min(1).describe('Token label.'),
            pinFile: z.string().min(1).describe('File holding the PIN, relative to dataDir.'),
            sessions: z
              .number()
              .int()
              .min(1)
              .max(64)
              .default(4)
              .describe('PKCS#11 sessions shared by all requests of one process.'),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** Name policy (src/policy): global allow/deny rules; per-scope rules live in the database. */
    policy: z
      .object({
        rules: z
          .array(
            z.union([z.object({ allow: z.string().min(1) }).strict(), z.object({ deny: z.string().min(1) }).strict()]),
          )
          .default([])
          .describe(
            'Global name policy rules, each { allow: PATTERN } or { deny: PATTERN } (deny wins; per-scope rules are kept in the database: keyward policy add).',
          ),
        defaultAction: z
          .enum(['allow', 'deny'])
          .default('allow')
          .describe('For a name type no scope has allow rules for: allow keeps an open CA, deny closes it.'),
      })
      .strict()
      .prefault({}),
    /** Rate limits (src/policy/rate-limits.ts), counted in the database; limit 0 switches one off. */
    rateLimits: z
      .object({
        newOrdersPerAccount: z
          .object({
            limit: z
              .number()
              .int()
              .min(0)
              .default(300)
              .describe('New orders one ACME account may place per window (newOrder). 0 switches it off.'),
            window: duration.prefault('1h').describe('The window newOrdersPerAccount.limit is counted in.'),
          })
          .strict()
          .prefault({}),
        certificatesPerName: z
          .object({
            limit: z
              .number()
              .int()
              .min(0)
              .default(50)
              .describe(
                'Certificates per name per window, counted when a certificate is issued for the front ends in certificatesPerName.appliesTo (every name of a request counts). 0 switches it off.',
              ),
            window: duration.prefault('168h').describe('The window certificatesPerName.limit is counted in.'),
            appliesTo: z
              .array(z.enum(['acme', 'mesh', 'operator']))
              .default(['acme'])
              .describe(
                'Front ends whose certificates count and are limited: acme (finalize), mesh (/v1/sign and /v1/renew), operator (keyward issue, admin-cert create). Mesh is off by default because workloads renew at 2/3 of short lifetimes and replicas share a name; operator because the operator is trusted.',
              ),
          })
          .strict()
          .prefault({}),
        failedValidationsPerAccount: z
          .object({
            limit: z
              .number()
              .int()
              .min(0)
              .default(5)
              .describe(
                'Failed validations one account may have per window before new challenges are refused. 0 switches it off.',
              ),
            window: duration.prefault('1h').describe('The window failedValidationsPerAccount.limit is counted in.'),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** Mesh bootstrapping (src/mesh): one-time tokens, /v1/sign, /v1/renew, /v1/bundle. */
    mesh: z
      .object({
        defaultProfile: z.string().default('mtls').describe('Profile of mesh certificates when the token names none.'),
        tokenTtl: duration.prefault('5m').describe('Default lifetime of a bootstrap token (keyward token create).'),
        maxTokenTtl: duration.prefault('24h').describe('Longest lifetime a bootstrap token may be given.'),
        bundleRefreshHint: duration.prefault('5m').describe('spiffe_refresh_hint of /v1/bundle.'),
      })
      .strict()
      .prefault({}),
    /** Prometheus metrics at GET /metrics (src/http/metrics.ts). */
    metrics: z
      .object({
        enabled: z.boolean().default(true).describe('Serve Prometheus metrics at GET /metrics.'),
        listen: listen
          .optional()
          .describe('Serve /metrics on this address only (e.g. an internal interface), not on the HTTP listener.'),
      })
      .strict()
      .prefault({}),
    /** Bounds on every listener (src/http/node-listener.ts), against slow and greedy clients. */
    limits: z
      .object({
        headersTimeout: duration
          .prefault('10s')
          .describe(
            'A connection must send its TLS handshake and request headers within this time (slowloris), or it is closed (408).',
          ),
        requestTimeout: duration
          .prefault('30s')
          .describe('A request, body included, must arrive within this time, or it is answered 408 and closed.'),
        idleTimeout: duration.prefault('60s').describe('A connection on which nothing moves for this long is closed.'),
        keepAliveTimeout: duration
          .prefault('5s')
          .describe('How long an idle keep-alive connection waits for its next request.'),
        maxConnections: z
          .number()
          .int()
          .min(1)
          .default(4096)
          .describe('Connections each listener accepts at once; more are refused (closed at once).'),
      })
      .strict()
      .prefault({}),
    /** Crash recovery of issuance (src/ca/recovery.ts, src/acme/janitor.ts). */
    recovery: z
      .object({
        abandonAfter: duration
          .prefault('2m')
          .describe(
            'A serial reservation without a certificate this old is marked abandoned (noting whether it was signed), and an ACME order left processing goes back to ready so the client can finalize again. Longer than any signature takes.',
          ),
        interval: duration.prefault('60s').describe('How often recovery runs (it also runs when the server starts).'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info')
          .describe('Log level (JSON lines on stdout); /health probes are logged at debug.'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    // CRL, OCSP and caIssuers URLs are built from http.publicUrl, else from http.listen.
    const host = config.http.listen.slice(0, config.http.listen.lastIndexOf(':'));
    if (config.http.publicUrl === undefined && WILDCARD_HOSTS.has(host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['http', 'publicUrl'],
        message: `required when http.listen is a wildcard address (${config.http.listen}): certificates would carry http://${config.http.listen} URLs; set it to the URL clients reach this listener at, e.g. http://keyward.internal:${config.http.listen.slice(host.length + 1)}`,
      });
    }
  });

const WILDCARD_HOSTS = new Set(['0.0.0.0', '[::]', '::', '*']);

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
