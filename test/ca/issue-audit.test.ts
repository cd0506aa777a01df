import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';

import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CertificateAuthority } from '../../src/ca/authority.ts';
import { reservationsWithAudit } from '../../src/ca/issue-writes.ts';
import { abandonStaleReservations } from '../../src/ca/recovery.ts';
import { rootOfTrustOptions } from '../../src/context.ts';
import type { FullVerification } from '../../src/kms/checkpoints.ts';
import { openKeyHierarchy } from '../../src/kms/index.ts';
import { kmsCli } from '../kms/helpers.ts';
import { startTestCa, type TestCa } from '../support/ca.ts';

// Serial first with one flushed commit: the reservation (with its TBS) is written by the statement
// that appends its key use's audit event, group-committed across concurrent issues and replicas,
// before anything is signed.
describe('issuance: the reservation and its key use commit together', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ serve: false });
  });
  afterAll(async () => {
    await ca?.close();
  });
  const db = () => ca.ctx.database.db;
  const verify = () => kmsCli<FullVerification>(ca.ctx, ['audit', 'verify']);

  function subjectKey(): { spki: Uint8Array; sha256: Buffer } {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
    return { spki, sha256: createHash('sha256').update(spki).digest() };
  }
  const issueWith = (authority: CertificateAuthority, name: string, spki = subjectKey().spki) =>
    authority.issue({
      subjectPublicKeyInfo: spki,
      keyType: 'ecdsa-p256',
      sans: { dns: [name], ip: [], uri: [], email: [] },
      profile: 'tls-server',
      requester: 'test',
    });
  const signEvents = (serials: readonly string[]) =>
    db()
      .selectFrom('audit_events')
      .select(['seq', 'outcome', 'error_code', 'context'])
      .where('action', '=', 'sign-certificate')
      .where(sql<string>`context->>'serial'`, 'in', serials.length > 0 ? [...serials] : [''])
      .orderBy('seq')
      .execute();
  const counts = async () => {
    const [r, c, e] = await Promise.all([
      db().selectFrom('serial_reservations').select(db().fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      db().selectFrom('certificates').select(db().fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      db()
        .selectFrom('audit_events')
        .select(db().fn.countAll<string>().as('n'))
        .where('action', '=', 'sign-certificate')
        .where('outcome', '=', 'success')
        .executeTakeFirstOrThrow(),
    ]);
    return { reservations: Number(r.n), certificates: Number(c.n), authorised: Number(e.n) };
  };

  it('on two replicas at once, with blocked keys in the batches: every reservation with its event and nothing of a blocked key, a chain that verifies and names a tampered row', async () => {
    const kms2 = await openKeyHierarchy(db(), rootOfTrustOptions(ca.config), 'replica-2');
    const other = new CertificateAuthority(db(), kms2, ca.config.profiles);
    const blocked = subjectKey();
    await db()
      .insertInto('blocked_keys')
      .values({ spki_sha256: blocked.sha256, reason: 'keyCompromise', source_serial: null })
      .execute();
    const before = await counts();

    const attempts = [
      ...Array.from({ length: 12 }, (_, i) => issueWith(ca.ctx.ca, `a${i}.internal`)),
      ...Array.from({ length: 12 }, (_, i) => issueWith(other, `b${i}.internal`)),
      ...Array.from({ length: 4 }, (_, i) => issueWith(i % 2 ? other : ca.ctx.ca, `x${i}.internal`, blocked.spki)),
      // Appends under the head lock in its own transaction: both replicas' head guesses go stale.
      kmsCli(ca.ctx, ['kms', 'rotate']),
    ];
    const settled = await Promise.allSettled(attempts);
    const issued = settled.slice(0, 24).map((s) => {
      if (s.status === 'rejected') throw s.reason;
      return s.value as { serial: string };
    });
    for (const s of settled.slice(24, 28)) {
      expect(s.status).toBe('rejected');
      expect(String((s as PromiseRejectedResult).reason)).toMatch(/revoked for keyCompromise/);
    }
    expect(settled[28]!.status).toBe('fulfilled');

    // Nothing of a blocked key was written, not even its event: reservations, certificates and
    // authorised key uses grew by the 24 certificates issued.
    const after = await counts();
    expect({
      reservations: after.reservations - before.reservations,
      certificates: after.certificates - before.certificates,
      authorised: after.authorised - before.authorised,
    }).toEqual({ reservations: 24, certificates: 24, authorised: 24 });

    // Every reservation has its serial's authorisation in the chain.
    const serials = issued.map((c) => c.serial);
    const events = await signEvents(serials);
    const reservations = await db()
      .selectFrom('serial_reservations')
      .select(['serial', 'status'])
      .where('serial', 'in', serials)
      .execute();
    expect(events).toHaveLength(24);
    for (const r of reservations) {
      expect(r.status).toBe('issued');
      const event = events.find((e) => (e.context as { serial: string }).serial === r.serial);
      expect(event?.outcome).toBe('success');
    }

    const v = await verify();
    expect(v).toMatchObject({ ok: true });
    expect(v.events).toBe(v.headSeq);
    // An event written with its reservation, edited afterwards, is named; so is one deleted.
    const mid = Number(events[12]!.seq);
    const edited = await db().selectFrom('audit_events').selectAll().where('seq', '=', mid).executeTakeFirstOrThrow();
    await sql`UPDATE audit_events SET context = context || '{"serial":"00"}' WHERE seq = ${mid}`.execute(db());
    expect((await verify()).firstBad).toMatchObject({ seq: mid, problem: 'edited' });
    await sql`UPDATE audit_events SET context = ${JSON.stringify(edited.context)}::jsonb WHERE seq = ${mid}`.execute(
      db(),
    );
    // Out of the chain's range and back, rather than deleted and re-inserted (a JS Date would lose
    // the microseconds the link hashes).
    await sql`UPDATE audit_events SET seq = -seq WHERE seq = ${mid + 1}`.execute(db());
    expect((await verify()).firstBad).toMatchObject({ seq: mid + 1, problem: 'deleted' });
    await sql`UPDATE audit_events SET seq = -seq WHERE seq = ${-(mid + 1)}`.execute(db());
    expect(await verify()).toMatchObject({ ok: true });
  });

  it('a key disabled behind a replica that still has it Enabled in memory: refused with nothing reserved or signed, the refusal audited', async () => {
    const issuer = await ca.ctx.ca.issuerForProfile('tls-server');
    await issueWith(ca.ctx.ca, 'warm.internal'); // this process has read the key row: Enabled
    const before = await counts();
    // As another replica's `kms disable` would: this process's remembered row is now stale, and
    // only the statement that appends the event finds out.
    await db().updateTable('kms_keys').set({ state: 'Disabled' }).where('id', '=', issuer.key_id).execute();
    try {
      await expect(issueWith(ca.ctx.ca, 'refused.internal')).rejects.toThrow(/is Disabled and cannot sign/);
    } finally {
      await db().updateTable('kms_keys').set({ state: 'Enabled' }).where('id', '=', issuer.key_id).execute();
    }
    expect(await counts()).toEqual(before);
    const denied = await db()
      .selectFrom('audit_events')
      .select(['outcome', 'error_code', 'context'])
      .where('key_id', '=', issuer.key_id)
      .where('outcome', '=', 'denied')
      .execute();
    expect(denied).toEqual([
      expect.objectContaining({
        outcome: 'denied',
        error_code: 'KeyDisabled',
        context: expect.objectContaining({ requester: 'test' }),
      }),
    ]);
    await issueWith(ca.ctx.ca, 'again.internal');
    expect(await verify()).toMatchObject({ ok: true });
  });

  it('a signature that fails after its key use was authorised: a failure event names the authorisation, the reservation is abandoned, nothing is stored', async () => {
    const issuer = await ca.ctx.ca.issuerForProfile('tls-server');
    await issueWith(ca.ctx.ca, 'warm2.internal');
    // The signing key as this process holds it, swapped for its public half: signing throws.
    const keys = (ca.ctx.kms as unknown as { keys: Map<string, { key: KeyObject; protection: string }> }).keys;
    const held = keys.get(issuer.key_id!)!;
    const privateKey = held.key;
    held.key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
    const before = await counts();
    try {
      await expect(issueWith(ca.ctx.ca, 'broken.internal')).rejects.toThrow();
    } finally {
      held.key = privateKey;
    }
    const after = await counts();
    expect(after.certificates).toBe(before.certificates);
    expect(after.reservations).toBe(before.reservations + 1);
    const reservation = await db()
      .selectFrom('serial_reservations')
      .select(['serial', 'status'])
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirstOrThrow();
    expect(reservation.status).toBe('abandoned');
    const events = await signEvents([reservation.serial]);
    expect(events.map((e) => [e.outcome, e.error_code])).toEqual([
      ['success', null],
      ['failure', 'InternalError'],
    ]);
    expect((events[1]!.context as { authorized: number }).authorized).toBe(Number(events[0]!.seq));

    // Had the process died before marking it abandoned, recovery would say it was never signed.
    await db()
      .updateTable('serial_reservations')
      .set({ status: 'reserved' })
      .where('serial', '=', reservation.serial)
      .execute();
    expect(await abandonStaleReservations(db(), 0)).toEqual([
      { serial: reservation.serial, requester: 'test', signed: false },
    ]);
    expect(await verify()).toMatchObject({ ok: true });
  });

  it('a crash between the authorisation and the signature: recovery marks the reservation as possibly signed', async () => {
    const issuer = await ca.ctx.ca.issuerForProfile('tls-server');
    const signer = await ca.ctx.kms.signer(issuer.key_id!, 'sign-certificate', 'keyward');
    const key = subjectKey();
    const serial = '7e'.repeat(16);
    // What issue does up to the signature; the process then "dies" (the signature is never made).
    const use = await signer.authorize!(
      { serial, profile: 'tls-server', requester: 'crashed' },
      {
        writer: reservationsWithAudit,
        item: {
          serial,
          issuerId: issuer.id,
          profile: 'tls-server',
          requester: 'crashed',
          request: JSON.stringify({ tbs: '', spkiSha256: key.sha256.toString('hex') }),
          spkiSha256: key.sha256,
        },
      },
    );
    expect(use).not.toBe('vetoed');
    // Recovery walks the events from the last checkpoint made an hour before the reservation:
    // one from two hours ago bounds it, one made just now (past the event) must not.
    const head = await db().selectFrom('audit_head').select('seq').executeTakeFirstOrThrow();
    const fake = {
      head_hash: Buffer.alloc(32),
      key_id: issuer.key_id!,
      spki: Buffer.alloc(1),
      sig: Buffer.alloc(1),
      prev_sig: Buffer.alloc(1),
    };
    await db()
      .insertInto('audit_checkpoints')
      .values([
        { ...fake, seq: 1, ts: new Date(Date.now() - 2 * 3600_000) },
        { ...fake, seq: Number(head.seq), ts: new Date() },
      ])
      .onConflict((oc) => oc.column('seq').doNothing())
      .execute();
    try {
      expect(await abandonStaleReservations(db(), 0)).toEqual([{ serial, requester: 'crashed', signed: true }]);
    } finally {
      await db().deleteFrom('audit_checkpoints').where('sig', '=', Buffer.alloc(1)).execute();
    }
  });
});
