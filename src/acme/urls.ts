/** Every URL we hand out, absolute on the public HTTPS base, so kids and `url` headers stay stable. */
export const ACME_PREFIX = '/acme';

export class AcmeUrls {
  constructor(readonly base: string) {}

  private u(path: string): string {
    return `${this.base}${ACME_PREFIX}${path}`;
  }

  directory = (): string => this.u('/directory');
  newNonce = (): string => this.u('/new-nonce');
  newAccount = (): string => this.u('/new-account');
  newOrder = (): string => this.u('/new-order');
  revokeCert = (): string => this.u('/revoke-cert');
  keyChange = (): string => this.u('/key-change');
  renewalInfo = (): string => this.u('/renewal-info');
  account = (id: string): string => this.u(`/acct/${id}`);
  accountOrders = (id: string): string => this.u(`/acct/${id}/orders`);
  order = (id: string): string => this.u(`/order/${id}`);
  finalize = (id: string): string => this.u(`/order/${id}/finalize`);
  authz = (id: string): string => this.u(`/authz/${id}`);
  challenge = (id: string): string => this.u(`/chall/${id}`);
  certificate = (serial: string): string => this.u(`/cert/${serial}`);

  /** The account id in an account URL we issued, or undefined for anything else. */
  accountId(url: string): string | undefined {
    const prefix = this.u('/acct/');
    if (!url.startsWith(prefix)) return undefined;
    const id = url.slice(prefix.length);
    return /^[A-Za-z0-9_-]+$/.test(id) ? id : undefined;
  }
}
