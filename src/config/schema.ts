import { z } from 'zod';

import { parseDuration } from './duration.ts';

const duration = z.string().transform((value, ctx) => {
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
    description: z.string().optional(),
    extKeyUsages: z.array(extKeyUsage).min(1),
    defaultLifetime: duration.prefault('24h'),
    maxLifetime: duration.prefault('24h'),
    keyTypes: z.array(subjectKeyType).default(['ecdsa-p256', 'ecdsa-p384', 'rsa', 'ed25519']),
    minRsaBits: z.number().int().min(2048).default(2048),
    /** Extra extension: certificate policy OIDs written into every certificate of the profile. */
    certificatePolicies: z
      .array(z.string().regex(/^[0-2](\.(0|[1-9]\d*))+$/, 'expected a dotted OID, e.g. 2.23.140.1.2.1'))
      .default([]),
    sanTypes: z.array(sanType).default(['dns', 'ip']),
    maxNames: z.number().int().min(1).max(1000).default(100),
    /**
     * Passive revocation (step-ca's default for short-lived certificates): a certificate whose
     * requested lifetime is at or below this carries no CRL distribution point and no OCSP URL, so
     * relying parties never look it up and expiry does the work. Revoking it is still recorded.
     * Absent: every certificate of the profile uses active revocation.
     */
    passiveRevocationAtOrBelow: duration.optional(),
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
      /** Name of the environment variable holding the passphrase (never the passphrase itself). */
      env: z.string().default('KEYWARD_PASSPHRASE'),
    })
    .strict(),
]);

const caKeySpec = (keyType: CaKeyType, commonName: string, lifetime: string) =>
  z
    .object({
      keyType: caKeyType.default(keyType),
      commonName: z.string().min(1).default(commonName),
      lifetime: duration.prefault(lifetime),
      /**
       * X.509 name constraints written into the CA certificate at init (intermediate only); the CA
       * also refuses to issue for names outside them. DNS: a name and its subdomains; IP: CIDRs.
       */
      nameConstraints: z
        .object({
          permittedDns: z.array(z.string().min(1)).default([]),
          excludedDns: z.array(z.string().min(1)).default([]),
          permittedIp: z
            .array(z.string().regex(/^[0-9a-fA-F:.]+\/\d{1,3}$/, 'expected a CIDR, e.g. 10.0.0.0/8'))
            .default([]),
          excludedIp: z
            .array(z.string().regex(/^[0-9a-fA-F:.]+\/\d{1,3}$/, 'expected a CIDR, e.g. 10.0.0.0/8'))
            .default([]),
        })
        .strict()
        .optional(),
    })
    .strict()
    .prefault({});

export const configSchema = z
  .object({
    dataDir: z.string().default('./data'),
    database: z
      .object({
        url: z.string().url().optional(),
        /** A file holding the URL (a Docker or Kubernetes secret), so the password is in no setting. */
        urlFile: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        listen: listen.default('127.0.0.1:8080'),
        /** Base URL written into certificates (CRL, OCSP); defaults to http://<listen>. */
        publicUrl: z.string().url().optional(),
      })
      .strict()
      .prefault({}),
    https: z
      .object({
        listen: listen.default('127.0.0.1:8443'),
        hostnames: z.array(z.string().min(1)).min(1).default(['localhost', '127.0.0.1']),
        publicUrl: z.string().url().optional(),
      })
      .strict()
      .prefault({}),
    rootOfTrust: rootOfTrust.default({ type: 'file' }),
    ca: z
      .object({
        organization: z.string().default('Keyward'),
        root: caKeySpec('ecdsa-p384', 'Keyward Root CA', '87600h'),
        intermediate: caKeySpec('ecdsa-p256', 'Keyward Intermediate CA', '43800h'),
      })
      .strict()
      .prefault({}),
    acme: z
      .object({
        termsOfService: z.string().url().optional(),
        website: z.string().url().optional(),
        /** Issuer domain names this CA answers to in CAA records (RFC 8659). */
        caaIdentities: z.array(z.string().min(1)).default(['keyward.internal']),
        externalAccountRequired: z.boolean().default(false),
        /** Profile used when a newOrder names none. */
        defaultProfile: z.string().default('tls-server'),
        /** Profiles offered to ACME clients (meta.profiles); default all configured profiles. */
        profiles: z.array(z.string()).optional(),
        nonceLifetime: duration.prefault('30m'),
        orderLifetime: duration.prefault('24h'),
        authorizationLifetime: duration.prefault('24h'),
        /** How long a valid authorization is reused for new orders of the same account. */
        authorizationReuse: duration.prefault('24h'),
        /** At finalize, CAA is checked again for names validated longer ago than this (BRs: 8 h). */
        caaRecheckAfter: duration.prefault('7h'),
        maxIdentifiersPerOrder: z.number().int().min(1).max(1000).default(100),
        maxRequestBytes: z.number().int().min(4096).max(1_048_576).default(65_536),
      })
      .strict()
      .prefault({}),
    validation: z
      .object({
        httpPort: z.number().int().min(1).max(65535).default(80),
        tlsAlpnPort: z.number().int().min(1).max(65535).default(443),
        /** 'host:port' of the DNS resolver for dns-01, CAA and name look-ups; default the system's. */
        dnsResolver: z
          .string()
          .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+)(:\d{1,5})?$/, 'expected host:port')
          .optional(),
        timeout: duration.prefault('10s'),
        /** A failing check is retried with backoff for this long before the challenge turns invalid. */
        retryFor: duration.prefault('2m'),
        maxRedirects: z.number().int().min(0).max(20).default(10),
        maxBodyBytes: z.number().int().min(256).max(1_048_576).default(8192),
        /** Check CAA records before issuing (RFC 8659). */
        caa: z.boolean().default(true),
        /** Checks one replica runs at once; they wait on the network, not the CPU. */
        concurrency: z.number().int().min(1).max(256).default(16),
      })
      .strict()
      .prefault({}),
    revocation: z
      .object({
        /** A CRL is published at most this long after a revocation. */
        crlPublishDelay: duration.prefault('60s'),
        crlValidity: duration.prefault('24h'),
        ocspValidity: duration.prefault('12h'),
        /**
         * CRL shards per issuer (Boulder style). A certificate gets its shard at issuance and keeps
         * it, so changing this later only affects new certificates; old shards keep being published.
         */
        crlShards: z.number().int().min(1).max(1024).default(1),
        /**
         * Who signs OCSP responses: a delegated responder certificate per issuer, or the issuer key
         * itself ('issuer' needs a KMS key policy on the intermediate that allows sign-ocsp; the
         * default intermediate policy does not, so that a leaked OCSP path can't use the CA key).
         */
        ocspSigner: z.enum(['delegated', 'issuer']).default('delegated'),
        /** Lifetime of a delegated responder certificate (it carries ocsp-nocheck); renewed at half-life. */
        ocspSignerLifetime: duration.prefault('168h'),
        /**
         * 'echo' signs a fresh response for a request with a nonce (RFC 8954); 'ignore' always serves
         * the pre-signed one (RFC 5019 2.1.2 permits this) so no request can force a signature.
         */
        ocspNonce: z.enum(['echo', 'ignore']).default('echo'),
        /** Retry-After on ACME Renewal Information answers (RFC 9773 4.3). */
        ariRetryAfter: duration.prefault('6h'),
      })
      .strict()
      .prefault({}),
    profilesDir: z.string().default('profiles'),
    profiles: z.record(z.string().regex(/^[a-z0-9][a-z0-9-]*$/), profileSchema).default({}),
    kms: z
      .object({
        /** Rotate KEKs whose primary version is older than this many days (per-KEK settings win). */
        autoRotateDays: z.number().int().min(1).optional(),
        /** How often the KMS janitor runs (deletions, auto-rotation). */
        janitorInterval: duration.prefault('60s'),
        /**
         * Sign an audit checkpoint after this many events, or this long after the last one: the
         * events after the newest checkpoint are vouched for by the chain key alone.
         */
        checkpointEveryEvents: z.number().int().min(1).default(1_000),
        checkpointInterval: duration.prefault('1m'),
        /**
         * Where each new checkpoint is also written, outside the database: a file (JSON lines,
         * relative to dataDir; ship it to WORM storage) or `-` for standard output.
         */
        checkpointExport: z.string().min(1).default('audit-checkpoints.jsonl'),
        /**
         * The PKCS#11 token that holds keys made with protection "hsm" (generated there, never
         * extractable; signatures are made in the token). The PIN is read from pinFile (relative
         * to dataDir) when a session logs in.
         */
        hsm: z
          .object({
            module: z.string().min(1),
            token: z.string().min(1),
            pinFile: z.string().min(1),
            /** PKCS#11 sessions shared by all requests of one process. */
            sessions: z.number().int().min(1).max(64).default(4),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** Name policy (src/policy): global allow/deny rules; per-scope rules live in the database. */
    policy: z
      .object({
        /** Each rule is `{ allow: PATTERN }` or `{ deny: PATTERN }` (see src/policy/patterns.ts). */
        rules: z
          .array(
            z.union([z.object({ allow: z.string().min(1) }).strict(), z.object({ deny: z.string().min(1) }).strict()]),
          )
          .default([]),
        /** For a name type no scope has allow rules for: 'allow' keeps an open CA, 'deny' closes it. */
        defaultAction: z.enum(['allow', 'deny']).default('allow'),
      })
      .strict()
      .prefault({}),
    /** Rate limits (src/policy/rate-limits.ts), counted in the database; limit 0 switches one off. */
    rateLimits: z
      .object({
        newOrdersPerAccount: z
          .object({ limit: z.number().int().min(0).default(300), window: duration.prefault('1h') })
          .strict()
          .prefault({}),
        certificatesPerName: z
          .object({ limit: z.number().int().min(0).default(50), window: duration.prefault('168h') })
          .strict()
          .prefault({}),
        failedValidationsPerAccount: z
          .object({ limit: z.number().int().min(0).default(5), window: duration.prefault('1h') })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** Mesh bootstrapping (src/mesh): one-time tokens, /v1/sign, /v1/renew, /v1/bundle. */
    mesh: z
      .object({
        defaultProfile: z.string().default('mtls'),
        tokenTtl: duration.prefault('5m'),
        maxTokenTtl: duration.prefault('24h'),
        /** spiffe_refresh_hint of /v1/bundle. */
        bundleRefreshHint: duration.prefault('5m'),
      })
      .strict()
      .prefault({}),
    /** Prometheus metrics at GET /metrics (src/http/metrics.ts). */
    metrics: z
      .object({
        enabled: z.boolean().default(true),
        /** Serve /metrics on this address only (e.g. an internal interface), not on the HTTP listener. */
        listen: listen.optional(),
      })
      .strict()
      .prefault({}),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
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
