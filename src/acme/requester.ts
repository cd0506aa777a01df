import type { Requester } from '../issuance/index.ts';
import type { AccountRow } from './account-store.ts';
import type { AcmeUrls } from './urls.ts';

/** An account as the issuance decision sees it: the account and its EAB binding scope the name policy. */
export function acmeRequester(urls: AcmeUrls, account: AccountRow): Requester {
  return {
    kind: 'acme',
    accountId: account.id,
    accountUri: urls.account(account.id),
    ...(account.eab_key_id ? { eabKid: account.eab_key_id } : {}),
  };
}
