import { createHash } from 'node:crypto';
import { parseCsr } from '../ca/csr.ts';
import { toPem } from '../ca/pem.ts';
import { x509 } from '../ca/x509.ts';
import type { AppContext } from '../context.ts';
import type { CertificateRow, IssuerRow, SanSet } from '../db/schema.ts';
import { verifyAudit, type AuditVerification } from '../kms/index.ts';

/**
 * The operations behind the CLI. Inputs and outputs are plain JSON so that a command runs the same
 * in-process or through a running server's admin socket.
 */
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

export function fingerprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

function issuerSummary(row: IssuerRow): IssuerSummary {
  return {
    id: row.id,
    kind: row.kind,
    subject: row.subject,
    notBefore: row.not_before.toISOString(),
    notAfter: row.not_after.toISOString(),
    sha256Fingerprint: fingerprint(row.certificate),
  };
}

function certificateSummary(row: CertificateRow): CertificateSummary {
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
}

export async function initCommand(ctx: AppContext, input: { principal: string }): Promise<InitOutput> {
  const { ca } = ctx.config;
  const result = await ctx.ca.init({ organization: ca.organization, root: ca.root, intermediate: ca.intermediate }, input.principal);
  return { created: result.created, root: issuerSummary(result.root), intermediate: issuerSummary(result.intermediate) };
}

export interface IssueInput {
  csr: string;
  profile?: string;
  ttlMs?: number;
  principal: string;
}

export interface IssueOutput {
  serial: string;
  notBefore: string;
  notAfter: string;
  profile: string;
  chainPem: string;
}

export async function issueCommand(ctx: AppContext, input: IssueInput): Promise<IssueOutput> {
  const csr = parseCsr(input.csr);
  const profile = input.profile ?? 'tls-server';
  const issued = await ctx.ca.issue({
    subjectPublicKeyInfo: csr.subjectPublicKeyInfo,
    keyType: csr.keyType,
    rsaBits: csr.rsaBits,
    commonName: csr.commonName,
    sans: csr.sans,
    profile,
    lifetimeMs: input.ttlMs,
    requester: input.principal,
  });
  return { serial: issued.serial, notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString(), profile, chainPem: issued.chainPem };
}

export async function certsListCommand(ctx: AppContext, input: { limit?: number; status?: 'valid' | 'revoked' }): Promise<CertificateSummary[]> {
  return (await ctx.ca.certificates(input)).map(certificateSummary);
}

export interface CertificateDetail extends CertificateSummary {
  pem: string;
  text: string;
}

export async function certsShowCommand(ctx: AppContext, input: { serial: string }): Promise<CertificateDetail> {
  const row = await ctx.ca.certificate(input.serial);
  const cert = new x509.X509Certificate(new Uint8Array(row.der));
  return { ...certificateSummary(row), pem: toPem(row.der), text: cert.toString('text') };
}

export async function issuersCommand(ctx: AppContext): Promise<IssuerSummary[]> {
  return (await ctx.ca.issuers()).map(issuerSummary);
}

export async function auditVerifyCommand(ctx: AppContext): Promise<AuditVerification> {
  return verifyAudit(ctx.database.db);
}

/** Commands the admin socket may run on behalf of a local CLI. */
export const remoteCommands = {
  init: initCommand,
  issue: issueCommand,
  'certs.list': certsListCommand,
  'certs.show': certsShowCommand,
  issuers: issuersCommand,
  'audit.verify': auditVerifyCommand,
} as const;

export type RemoteCommandName = keyof typeof remoteCommands;
