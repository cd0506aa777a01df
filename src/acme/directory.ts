import { currentRoot } from '../ca/chains.ts';
import { caIssuersUrl } from '../ca/revocation-urls.ts';
import { sha256Fingerprint, trustedRoots } from '../ca/trusted-roots.ts';
import type { IssuerRow } from '../db/schema.ts';
import type { AcmeDeps } from './deps.ts';
import { offeredProfiles } from './deps.ts';

/** One root a client should trust, as `meta.roots` lists it. */
export interface DirectoryRoot {
  /** The root certificate as DER (application/pkix-cert) on the plain HTTP listener. */
  url: string;
  /** SHA-256 of that DER, as `keyward serve` prints it: a client checks what it fetched. */
  sha256Fingerprint: string;
  subject: string;
  notAfter: string;
  /** The root new chains lead to; during a rollover the other one is still trusted. */
  current: boolean;
}

/**
 * RFC 8555 §7.1.1; meta member types are fixed because clients decode them strictly. `roots` is
 * ours (the section lets a server add fields; clients ignore what they don't know): every root
 * /roots.pem serves, so a client learns a rollover's new root from the directory it already reads.
 * Built per request from the issuer registry, so it changes on every replica with a rotation.
 */
export async function directoryBody(deps: AcmeDeps): Promise<Record<string, unknown>> {
  const { urls } = deps;
  const acme = deps.config.acme;
  const meta: Record<string, unknown> = {
    caaIdentities: acme.caaIdentities,
    externalAccountRequired: acme.externalAccountRequired,
    profiles: Object.fromEntries(offeredProfiles(deps).map((p) => [p.name, p.description ?? p.name])),
    roots: listRoots(await deps.certificates.issuers(), deps.config.httpBaseUrl),
  };
  if (acme.termsOfService) meta.termsOfService = acme.termsOfService;
  if (acme.website) meta.website = acme.website;
  return {
    newNonce: urls.newNonce(),
    newAccount: urls.newAccount(),
    newOrder: urls.newOrder(),
    revokeCert: urls.revokeCert(),
    keyChange: urls.keyChange(),
    renewalInfo: urls.renewalInfo(),
    meta,
  };
}

function listRoots(rows: readonly IssuerRow[], httpBaseUrl: string): DirectoryRoot[] {
  const current = currentRoot(rows)?.id;
  return trustedRoots(rows).map((r) => ({
    url: caIssuersUrl(httpBaseUrl, r.id),
    sha256Fingerprint: sha256Fingerprint(r.certificate),
    subject: r.subject,
    notAfter: r.not_after.toISOString(),
    current: r.id === current,
  }));
}
