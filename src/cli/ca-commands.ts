import { readFileSync } from 'node:fs';

import { toPem } from '../ca/pem.ts';
import { sha256Fingerprint } from '../ca/trusted-roots.ts';
import { parseDuration } from '../config/duration.ts';
import type { SanSet } from '../core/identifiers.ts';
import type { CertificateRow, IssuerRow } from '../db/schema.ts';
import type { DeliveredShares, ShareDelivery } from '../kms/share-files.ts';
import { type CliCommand, defineCommand, requireString, UsageError } from './command.ts';
import { cliIo } from './io.ts';
import { describeShares, SHARE_DELIVERY_OPTIONS, shareDeliveryInput } from './shares-commands.ts';

export interface IssuerSummary {
  id: string;
  kind: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  sha256Fingerprint: string;
}

export interface CertificateSummary {
  serial: string;
  issuerId: string;
  commonName: string | null;
  sans: SanSet;
  profile: string;
  notBefore: string;
  notAfter: string;
  status: string;
  revokedAt: string | null;
  revocationReason: number | null;
  requester: string;
}

export function issuerSummary(row: IssuerRow): IssuerSummary {
  return {
    id: row.id,
    kind: row.kind,
    subject: row.subject,
    notBefore: row.not_before.toISOString(),
    notAfter: row.not_after.toISOString(),
    sha256Fingerprint: sha256Fingerprint(row.certificate),
  };
}

export function certificateSummary(row: CertificateRow): CertificateSummary {
  return {
    serial: row.serial,
    issuerId: row.issuer_id,
    commonName: row.common_name,
    sans: row.sans,
    profile: row.profile,
    notBefore: row.not_before.toISOString(),
    notAfter: row.not_after.toISOString(),
    status: row.status,
    revokedAt: row.revoked_at?.toISOString() ?? null,
    revocationReason: row.revocation_reason,
    requester: row.requester,
  };
}

export interface InitOutput {
  created: boolean;
  root: IssuerSummary;
  intermediate: IssuerSummary;
  /** A new shares root of trust: where its shares went (or the shares, to show once). */
  shares?: DeliveredShares;
}

export function describeInit(out: InitOutput): string {
  const head = out.created ? 'Created a new CA.' : 'The CA already exists; nothing changed.';
  return `${out.shares ? describeShares(out.shares) : ''}${head}
  root          ${out.root.subject}
                SHA-256 ${out.root.sha256Fingerprint}
                valid until ${out.root.notAfter}
  intermediate  ${out.intermediate.subject} (issuer id ${out.intermediate.id})
                valid until ${out.intermediate.notAfter}
`;
}

export const initCommand = defineCommand<{ delivery?: ShareDelivery }, InitOutput>({
  path: ['init'],
  usage: 'init [--share-dir D [--holder-key K]...]',
  summary: 'create the root and intermediate CA (does nothing if they exist); a shares root hands out its shares',
  createsCa: true,
  options: SHARE_DELIVERY_OPTIONS,
  input: (v) => ({ delivery: shareDeliveryInput(v) }),
  run: async (ctx, input) => {
    const { ca, rootOfTrust } = ctx.config;
    const { awaitingSharesRoot, createSharesRootOfTrust, KmsError } = await import('../kms/index.ts');
    let shares: DeliveredShares | undefined;
    if (awaitingSharesRoot(ctx.kms)) {
      // `serve` runs init too, but has nowhere to hand shares out to.
      if (!input.delivery || rootOfTrust.type !== 'shares')
        throw new KmsError(
          'InvalidState',
          'rootOfTrust is "shares" and there is no root yet: run keyward init first (it shows the shares once, or writes them with --share-dir)',
        );
      shares = await createSharesRootOfTrust(
        ctx.kms,
        ctx.database.db,
        { threshold: rootOfTrust.threshold, count: rootOfTrust.shares },
        input.delivery,
        input.principal,
      );
    }
    const result = await ctx.ca.init(
      { organization: ca.organization, root: ca.root, intermediate: ca.intermediate },
      input.principal,
    );
    return {
      created: result.created,
      root: issuerSummary(result.root),
      intermediate: issuerSummary(result.intermediate),
      ...(shares ? { shares } : {}),
    };
  },
  format: describeInit,
});

interface IssueOutput {
  serial: string;
  notBefore: string;
  notAfter: string;
  profile: string;
  chainPem: string;
}

const issueCommand = defineCommand<{ csr: string; profile?: string; ttlMs?: number }, IssueOutput>({
  path: ['issue'],
  usage: 'issue --csr FILE [--profile P] [--ttl 24h]',
  summary: 'sign a CSR; prints the chain as PEM, leaf first',
  options: { csr: { type: 'string' }, profile: { type: 'string' }, ttl: { type: 'string' } },
  input: (values) => {
    const file = requireString(values, 'csr', 'issue');
    let csr: string;
    try {
      csr = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`--csr: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
    }
    let ttlMs: number | undefined;
    try {
      ttlMs = typeof values.ttl === 'string' ? parseDuration(values.ttl) : undefined;
    } catch (err) {
      throw new UsageError(`--ttl: ${(err as Error).message}`);
    }
    return { csr, profile: values.profile as string | undefined, ttlMs };
  },
  run: async (ctx, input) => {
    const { parseCsr } = await import('../ca/csr.ts');
    const csr = parseCsr(input.csr);
    const profile = input.profile ?? 'tls-server';
    // The same decision as every other front end: profile limits, requested extensions, name policy.
    const issued = await ctx.issuance.issue({
      requester: { kind: 'operator', principal: input.principal },
      names: csr.sans,
      ...(csr.commonName !== undefined ? { commonName: csr.commonName } : {}),
      publicKey: {
        spki: csr.subjectPublicKeyInfo,
        keyType: csr.keyType,
        ...(csr.rsaBits !== undefined ? { rsaBits: csr.rsaBits } : {}),
      },
      profile,
      ...(input.ttlMs !== undefined ? { lifetimeMs: input.ttlMs } : {}),
      extensions: csr.extensions,
    });
    return {
      serial: issued.serial,
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
      profile,
      chainPem: issued.chainPem,
    };
  },
  format: (out) => {
    cliIo().stderr(`Issued serial ${out.serial} (profile ${out.profile}), valid until ${out.notAfter}.\n`);
    return out.chainPem;
  },
});

function certLine(c: CertificateSummary): string {
  const names = [...c.sans.dns, ...c.sans.ip, ...c.sans.uri, ...c.sans.email].join(',');
  return `${c.serial}  ${c.status.padEnd(7)}  ${c.notAfter}  ${c.profile.padEnd(10)}  ${names}`;
}

interface ReservationSummary {
  serial: string;
  state: 'reserved' | 'abandoned';
  issuerId: string;
  profile: string;
  requester: string;
  createdAt: string;
}

type CertsListInput = { status?: 'valid' | 'revoked'; state?: 'reserved' | 'abandoned'; limit?: number };

const certsListCommand = defineCommand<CertsListInput, CertificateSummary[] | ReservationSummary[]>({
  path: ['certs', 'list'],
  usage: 'certs list [--status valid|revoked | --state reserved|abandoned] [--limit N]',
  summary:
    'list issued certificates, newest first; --state: serials reserved but never recorded (reserved: being signed or lost in a crash; abandoned: the signature was refused)',
  options: { status: { type: 'string' }, state: { type: 'string' }, limit: { type: 'string' } },
  input: (values) => {
    const status = values.status;
    if (status !== undefined && status !== 'valid' && status !== 'revoked')
      throw new UsageError('--status must be valid or revoked');
    const state = values.state;
    if (state !== undefined && state !== 'reserved' && state !== 'abandoned')
      throw new UsageError('--state must be reserved or abandoned');
    if (status !== undefined && state !== undefined)
      throw new UsageError('--status (certificates) and --state (reservations) cannot be combined');
    const limit = values.limit === undefined ? undefined : Number(values.limit);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
      throw new UsageError('--limit must be a positive whole number');
    return { status, state, limit };
  },
  run: async (ctx, input) => {
    if (input.state === undefined)
      return (await ctx.ca.certificates({ status: input.status, limit: input.limit })).map(certificateSummary);
    const state = input.state;
    return (await ctx.ca.reservations({ state, limit: input.limit })).map((r) => ({
      serial: r.serial,
      state,
      issuerId: r.issuerId,
      profile: r.profile,
      requester: r.requester,
      createdAt: r.createdAt.toISOString(),
    }));
  },
  format: (out) => {
    if (out.length === 0) return 'No certificates.\n';
    return (
      out
        .map((c) =>
          'state' in c
            ? `${c.serial}  ${c.state.padEnd(9)}  ${c.createdAt}  ${c.profile.padEnd(10)}  ${c.requester}`
            : certLine(c),
        )
        .join('\n') + '\n'
    );
  },
});

interface CertificateDetail extends CertificateSummary {
  pem: string;
  text: string;
}

const certsShowCommand = defineCommand<{ serial: string }, CertificateDetail>({
  path: ['certs', 'show'],
  usage: 'certs show SERIAL',
  summary: 'show one certificate',
  input: (_values, positionals) => {
    if (!positionals[0]) throw new UsageError('certs show needs a SERIAL');
    return { serial: positionals[0] };
  },
  run: async (ctx, input) => {
    const row = await ctx.ca.certificate(input.serial);
    const { x509 } = await import('../ca/x509.ts');
    const cert = new x509.X509Certificate(new Uint8Array(row.der));
    return { ...certificateSummary(row), pem: toPem(row.der), text: cert.toString('text') };
  },
  format: (out) => `${out.text}\n${out.pem}`,
});

export const caCommands: CliCommand[] = [initCommand, issueCommand, certsListCommand, certsShowCommand];
