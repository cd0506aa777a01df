import { KmsError } from './errors.ts';
import { checkShare, combineShares, type ParsedShare, parseShare, shareSetOf } from './roots/shares.ts';
import { symmetricRoot } from './roots/symmetric.ts';
import type { RootOfTrust, RootRecord } from './roots/types.ts';

/** Where unsealing stands in this process. */
export interface UnsealStatus {
  sealed: boolean;
  rootId: string;
  setId: string;
  threshold: number;
  count: number;
  /** Indices of the shares entered so far (while sealed), or used to unseal. */
  entered: number[];
}

/** A root of trust that refuses everything until M shares are in (a shares root, sealed). */
export function sealedRoot(id: string, why: string): RootOfTrust {
  const refuse = async (): Promise<never> => {
    throw new KmsError('Sealed', why);
  };
  return { id, provider: 'shares', wrapKek: refuse, unwrapKek: refuse };
}

/**
 * Collects shares in process memory until the threshold is met, then rebuilds the root key. Each
 * share is checked on arrival against the share set the database names now (so a rekey done
 * elsewhere applies at once); a refused share changes nothing. Shares never leave this process.
 */
export class Unsealer {
  private readonly entered = new Map<number, { share: ParsedShare; principal: string }>();

  status(record: RootRecord, sealed: boolean): UnsealStatus {
    const set = shareSetOf(record);
    return {
      sealed,
      rootId: record.id,
      setId: set.setId,
      threshold: set.threshold,
      count: set.count,
      entered: [...this.entered.keys()].sort((a, b) => a - b),
    };
  }

  /** Adds one share; returns the root once the threshold is met. */
  async submit(
    record: RootRecord,
    text: string,
    principal: string,
  ): Promise<{ root?: RootOfTrust; used: { index: number; principal: string }[] }> {
    const set = shareSetOf(record);
    // Shares of a set replaced since they were entered no longer count.
    for (const [index, e] of this.entered) if (e.share.setId !== set.setId) this.entered.delete(index);
    const share = parseShare(text);
    checkShare(set, share);
    if (this.entered.has(share.index))
      throw new KmsError('InvalidShare', `share ${share.index} of ${share.count} was already entered`);
    this.entered.set(share.index, { share, principal });
    const used = [...this.entered.entries()].map(([index, e]) => ({ index, principal: e.principal }));
    if (this.entered.size < set.threshold) return { used };
    const shares = [...this.entered.values()].map((e) => e.share);
    this.entered.clear();
    const key = await combineShares(record, shares);
    return { root: symmetricRoot(record.id, 'shares', key), used };
  }

  reset(): void {
    this.entered.clear();
  }
}
