import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { IssuerLifecycleDeps } from '../../src/ca/issuer-lifecycle.ts';
import { rotateIntermediate } from '../../src/ca/issuer-lifecycle.ts';
import { toPem } from '../../src/ca/pem.ts';
import { rotateRoot } from '../../src/ca/root-rotation.ts';
import { spiffeBundle } from '../../src/mesh/bundle.ts';
import { issueLeaf } from '../revocation/helpers.ts';
import { type AcmeTestEnv, issue, startAcmeEnv } from '../support/acme.ts';
import { openssl, tempDir } from '../support/pki.ts';

const blocks = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];

// Root rollover as relying parties see it: each root certifies the other, and a client that trusts
// only one of them validates old and new leaves alike (openssl verify -CAfile … -untrusted …).
describe('root rollover with cross-certificates', () => {
  let env: AcmeTestEnv;
  let deps: IssuerLifecycleDeps;
  let dir: string;
  const file = (name: string, data: string) => {
    const path = join(dir, name);
    writeFileSync(path, data);
    return path;
  };
  /** openssl verify of the chain's leaf trusting only `rootPem`, the rest of the chain untrusted. */
  const verify = (rootPem: string, chain: string, tag: string) => {
    const [leaf, ...rest] = blocks(chain);
    const args = ['verify', '-CAfile', file(`${tag}-root.pem`, rootPem)];
    if (rest.length) args.push('-untrusted', file(`${tag}-chain.pem`, rest.join('')));
    const r = openssl([...args, file(`${tag}-leaf.pem`, leaf!)]);
    return { ok: r.status === 0, out: r.stdout + r.stderr };
  };

  beforeAll(async () => {
    env = await startAcmeEnv();
    const ctx = env.ca.ctx;
    deps = {
      db: ctx.database.db,
      kms: ctx.kms,
      registry: ctx.ca.registry,
      profiles: [...ctx.config.profiles.keys()],
      organization: 'Keyward',
    };
    dir = tempDir('kw-rollover-').path;
  });
  afterAll(async () => env?.close());

  it('old and new leaves validate against either root; ACME offers the other chain as an alternate', async () => {
    const ctx = env.ca.ctx;
    const oldRootPem = env.ca.rootPem;
    const oldLeaf = await issueLeaf(env.ca, { name: 'before.internal' });
    const oldIssuer = await ctx.ca.issuerForProfile('tls-server');

    const r = await rotateRoot(deps, {}, 'test');
    expect(r.old.state).toBe('retiring');
    expect(r.new.subject).toMatch(/CN=Keyward Root CA \d{4}/);
    const newRootPem = toPem(r.new.certificate);
    const { new: inter } = await rotateIntermediate(deps, oldIssuer.id, {}, 'test');
    expect(inter.parent_id).toBe(r.new.id);

    // /roots.pem and the SPIFFE bundle carry both roots during the rollover.
    const roots = await (await fetch(`${env.ca.httpUrl}/roots.pem`)).text();
    expect(blocks(roots)).toEqual(expect.arrayContaining([oldRootPem, newRootPem]));
    const bundle = await spiffeBundle(ctx.database.db, 60_000);
    expect(bundle.keys.map((k) => (k.x5c as string[])[0])).toEqual(
      [r.old.certificate, r.new.certificate].map((c) => Buffer.from(c).toString('base64')),
    );

    const newLeaf = await issueLeaf(env.ca, { name: 'after.internal' });
    expect(newLeaf.issuerId).toBe(inter.id);
    const [newPrimary, newAlternate] = await ctx.ca.chainsFor({ der: newLeaf.der, issuer_id: inter.id });
    expect(verify(newRootPem, newPrimary!, 'n1').ok).toBe(true);
    expect(verify(oldRootPem, newPrimary!, 'n2').ok).toBe(false);
    const viaCross = verify(oldRootPem, newAlternate!, 'n3');
    expect(viaCross.ok, viaCross.out).toBe(true);

    // The old leaf: to the new root through the old root certified by the new one.
    const [oldPrimary, oldAlternate] = await ctx.ca.chainsFor({ der: oldLeaf.der, issuer_id: oldLeaf.issuerId });
    const reverse = verify(newRootPem, oldPrimary!, 'o1');
    expect(reverse.ok, reverse.out).toBe(true);
    expect(verify(oldRootPem, oldAlternate!, 'o2').ok).toBe(true);
    expect(verify(newRootPem, oldAlternate!, 'o3').ok).toBe(false);

    // ACME: the default chain leads to the new root; a client preferring the old one gets it.
    const client = await env.client();
    await client.createAccount({ termsOfServiceAgreed: true });
    const issued = await issue(env, client, [{ type: 'dns', value: 'acme-after.internal' }], 'http-01');
    expect(verify(newRootPem, issued.certPem, 'a1').ok).toBe(true);
    const preferred = await client.getCertificate(issued.order, 'Keyward Root CA');
    expect(preferred).not.toBe(issued.certPem);
    const alt = verify(oldRootPem, preferred, 'a2');
    expect(alt.ok, alt.out).toBe(true);
  });
});
