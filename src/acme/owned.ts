import { KeywardError } from '../core/errors.ts';
import type { AccountRow } from './account-store.ts';

/**
 * `row` if the account may see it: notFound when there is none, unauthorized when it is another
 * account's. `what` names the resource in the problem's detail.
 */
export function owned<T extends { account_id: string }>(row: T | undefined, account: AccountRow, what: string): T {
  if (!row) throw new KeywardError('notFound', `No such ${what}`);
  if (row.account_id !== account.id) throw new KeywardError('unauthorized', `This ${what} belongs to another account`);
  return row;
}
