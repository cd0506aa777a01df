import { sql } from 'kysely';

import type { Db, Executor } from '../db/schema.ts';
import type { KeyHierarchy } from '../kms/hierarchy.ts';
import type { KeyRef } from '../kms/refs.ts';
import { type DependantCheck, KeyStates } from '../kms/states.ts';

/**
 * What the CA still needs a key for: an issuer whose certificate or issued certificates have not
 * expired, or an unexpired delegated OCSP signer. Disabling or deleting such a key stops signing,
 * CRLs or OCSP answers, so the key hierarchy refuses it without --force. Lives in ca/ because kms/
 * knows no certificates.
 */
export const caKeyDependants: DependantCheck = async (db: Executor, ref: KeyRef) => {
  if (ref.kind !== 'key') return [];
  const out: string[] = [];
  const issuers = await sql<{ id: string; subject: string; live: boolean; certs: number }>`
    SELECT i.id, i.subject, i.not_after > now() AS live,
      (SELECT count(*) FROM certificates c WHERE c.issuer_id = i.id AND c.not_after > now() AND c.status = 'valid')::int AS certs
    FROM issuers i WHERE i.key_id = ${ref.id}`.execute(db);
  for (const i of issuers.rows) {
    if (i.live) out.push(`CA ${i.id} (${i.subject}) signs with this key and is valid until its certificate expires`);
    if (Number(i.certs) > 0)
      out.push(`${i.certs} unexpired certificate(s) issued by CA ${i.id} could no longer get CRLs or OCSP answers`);
  }
  const ocsp = await sql<{
    id: string;
  }>`SELECT id FROM ocsp_signers WHERE key_id = ${ref.id} AND not_after > now()`.execute(db);
  for (const o of ocsp.rows) out.push(`OCSP signer ${o.id} uses this key and has not expired`);
  return out;
};

/** Key state changes (disable, schedule deletion) that also refuse to strand what the CA signs with. */
export function keyStatesWithCaChecks(kms: KeyHierarchy, db: Db): KeyStates {
  return new KeyStates(kms, db, [caKeyDependants]);
}
