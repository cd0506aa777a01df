import type { Executor } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { parsePolicy } from './key-policy.ts';
import { resolveKey } from './refs.ts';

/**
 * Replaces the policy of a key or a whole KEK, audited in the same transaction so no policy
 * change goes unrecorded.
 */
export async function putKeyPolicy(
  kms: KeyHierarchy,
  db: Executor,
  key: string,
  raw: unknown,
  principal: string,
): Promise<{ key: string; statements: number }> {
  const policy = parsePolicy(raw);
  const ref = await resolveKey(db, key);
  if (ref.kind !== 'key' && ref.kind !== 'kek')
    throw new KmsError('InvalidInput', 'policies are set on keys and whole KEKs');
  await db.transaction().execute(async (trx) => {
    const table = ref.kind === 'key' ? 'kms_keys' : 'kms_keks';
    await trx
      .updateTable(table)
      .set({ policy: JSON.stringify(policy) })
      .where('id', '=', ref.id)
      .execute();
    await kms.audit.append(trx, {
      principal,
      action: 'put-policy',
      keyId: ref.id,
      outcome: 'success',
      context: { statements: policy.statements.length },
    });
  });
  return { key, statements: policy.statements.length };
}
