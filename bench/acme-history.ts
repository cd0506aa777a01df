import type pg from 'pg';

/**
 * A CA's tables are not empty: it has issued before. The bench gives its fresh database the rows of
 * `orders` earlier finalized orders (their authorizations, per-name counters,
 * serial reservations and certificates,
 * under accounts the bench doesn't use, validated and expired long ago so nothing is reused), then
 * gathers statistics as autovacuum would. Plans made for near-empty tables stay cached per
 * connection until the next ANALYZE, and a table that grows tenfold in the run is not what a
 * running CA sees; with history it grows by a few per cent.
 */
export async function addHistory(db: pg.Client, orders: number): Promise<void> {
  await db.query('BEGIN');
  await db.query(
    `INSERT INTO acme_authzs (id, account_id, identifier_type, identifier_value, wildcard, status, expires,
       validated_at, created_at, order_id, challenge_types, challenge_tokens, attempted, attempt_status)
     SELECT 'hist-a' || i, 'hist-acct-' || (i % 50), 'dns', 'h' || i || '.history.test', false, 'valid',
       now() - interval '60 days', now() - interval '90 days', now() - interval '90 days', 'hist-o' || i,
       '{dns-01,http-01,tls-alpn-01}', ARRAY['hist-t1-' || i, 'hist-t2-' || i, 'hist-t3-' || i], 'http-01', 'valid'
     FROM generate_series(1, $1) AS i`,
    [orders],
  );
  await db.query(
    `INSERT INTO acme_orders (id, account_id, status, expires, identifiers, profile, created_at, updated_at, authz_ids)
     SELECT 'hist-o' || i, 'hist-acct-' || (i % 50), 'valid', now() - interval '80 days',
       jsonb_build_array(jsonb_build_object('type', 'dns', 'value', 'h' || i || '.history.test')), 'default',
       now() - interval '90 days', now() - interval '90 days', ARRAY['hist-a' || i]
     FROM generate_series(1, $1) AS i`,
    [orders],
  );
  await db.query(
    `INSERT INTO rate_limit_counters (name, key, window_start, count)
     SELECT 'certificatesPerName', 'h' || i || '.history.test', now() - interval '90 days', 1
     FROM generate_series(1, $1) AS i ON CONFLICT DO NOTHING`,
    [orders],
  );
  // Their certificates (expired, from an issuer that no longer signs) and serial reservations.
  await db.query(
    `INSERT INTO serial_reservations (serial, issuer_id, profile, requester, request, status, created_at, signed)
     SELECT 'ee' || lpad(to_hex(i), 30, '0'), 'hist-issuer', 'default', 'acme:hist-acct-' || (i % 50), '{}',
       'issued', now() - interval '90 days', true
     FROM generate_series(1, $1) AS i`,
    [orders],
  );
  await db.query(
    `INSERT INTO certificates (serial, issuer_id, der, common_name, sans, not_before, not_after, profile, spki_sha256,
       requester, created_at)
     SELECT 'ee' || lpad(to_hex(i), 30, '0'), 'hist-issuer', sha256(int4send(i)), 'h' || i || '.history.test',
       jsonb_build_array('h' || i || '.history.test'), now() - interval '90 days', now() - interval '1 day',
       'default', sha256(int4send(-i)), 'acme:hist-acct-' || (i % 50), now() - interval '90 days'
     FROM generate_series(1, $1) AS i`,
    [orders],
  );
  await db.query('COMMIT');
  await db.query('ANALYZE');
}
