import { ExpiringMap } from '../core/expiring-map.ts';

/** An order's certificate as the download needs it. */
export interface OrderCertificate {
  account_id: string;
  der: Uint8Array;
  issuer_id: string;
}

/**
 * Certificates this replica just issued, for their download (a client fetches its certificate
 * right after finalize): a certificate and the account that ordered it never change, so the
 * memory can't be stale, and a download on another replica reads it with its nonce's spend
 * (read-along.ts).
 */
export function recentCertificates(): ExpiringMap<string, OrderCertificate> {
  return new ExpiringMap(4_096, 10 * 60_000);
}
