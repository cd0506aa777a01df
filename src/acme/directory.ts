import type { AcmeDeps } from './deps.ts';
import { offeredProfiles } from './deps.ts';

/** RFC 8555 §7.1.1; meta member types are fixed because clients decode them strictly. */
export function directoryBody(deps: AcmeDeps): Record<string, unknown> {
  const { urls } = deps;
  const acme = deps.config.acme;
  const meta: Record<string, unknown> = {
    caaIdentities: acme.caaIdentities,
    externalAccountRequired: acme.externalAccountRequired,
    profiles: Object.fromEntries(offeredProfiles(deps).map((p) => [p.name, p.description ?? p.name])),
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
