import { sql } from 'kysely';

import type { Db } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import {
  checkShare,
  combineShares,
  type ParsedShare,
  parseShare,
  shareSetOf,
  type ShareSetParams,
  splitRootKey,
} from './roots/shares.ts';
import { symmetricRoot } from './roots/symmetric.ts';
import { type DeliveredShares, deliverShares, type ShareDelivery } from './share-files.ts';

/**
 * `keyward rekey-shares`: the threshold of current shares rebuilds the root key, which is split
 * into a new set (optionally with another M or N). The root key, its check value and every KEK
 * stay as they are, so running replicas go on; the new set id and digests replace the old ones in
 * one conditional update, after which the old shares are refused by every replica. A sealed process
 * it runs in is opened by the same shares (its audit chain key is needed to record the rekey).
 */
export async function rekeyShares(
  kms: KeyHierarchy,
  db: Db,
  shareTexts: string[],
  next: { threshold?: number; count?: number },
  delivery: ShareDelivery,
  principal: string,
): Promise<DeliveredShares> {
  const rootId = kms.rootId;
  const row = await db.selectFrom('kms_roots').selectAll().where('id', '=', rootId).executeTakeFirst();
  if (row?.provider !== 'shares' || row.state !== 'Enabled')
    throw new KmsError('InvalidState', 'rekey-shares needs a shares root of trust (rootOfTrust type "shares")');
  const record = { id: row.id, provider: row.provider, params: row.params, kcv: row.kcv };
  const current = shareSetOf(record);
  const parsed = new Map<number, ParsedShare>();
  for (const text of shareTexts) {
    const share = parseShare(text);
    checkShare(current, share);
    if (parsed.has(share.index))
      throw new KmsError('InvalidShare', `share ${share.index} of ${share.count} was given twice`);
    parsed.set(share.index, share);
  }
  if (parsed.size < current.threshold)
    throw new KmsError(
      'InvalidShare',
      `rekey-shares needs ${current.threshold} of the current shares (got ${parsed.size})`,
    );
  const key = await combineShares(record, [...parsed.values()]);
  const threshold = next.threshold ?? current.threshold;
  const count = next.count ?? current.count;
  const set = await splitRootKey(key, threshold, count);
  const used = [...parsed.keys()].sort((a, b) => a - b);
  if (kms.sealed)
    await kms.openWith(
      symmetricRoot(rootId, 'shares', key),
      record,
      used.map((index) => ({ index, principal })),
      principal,
    );
  key.fill(0);
  return db.transaction().execute(async (trx) => {
    const out = deliverShares({ threshold, count, setId: set.params.setId, shares: set.shares }, delivery);
    // Conditional on the set we checked: two rekeys at once can't both win.
    const updated = await trx
      .updateTable('kms_roots')
      .set({ params: JSON.stringify(set.params satisfies ShareSetParams) })
      .where('id', '=', rootId)
      .where(sql<string>`params->>'setId'`, '=', current.setId)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1)
      throw new KmsError('InvalidState', 'the share set changed while rekeying; run rekey-shares again');
    await kms.audit.append(trx, {
      principal,
      action: 'rekey-shares',
      keyId: rootId,
      outcome: 'success',
      context: {
        from: current.setId,
        to: set.params.setId,
        threshold,
        shares: count,
        used: used.join(','),
      },
    });
    return out;
  });
}
