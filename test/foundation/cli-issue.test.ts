import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestCa, type TestCa } from '../support/ca.ts';
import { cli as runCli, keyward } from '../support/cli.ts';
import { createTestStore, type TestStore } from '../support/db.ts';
import { opensslCsr, opensslText, opensslVerify } from '../support/openssl.ts';

async function rootOf(store: TestStore): Promise<{ kinds: string[]; rootPem: string }> {
  const handle = await store.open();
  try {
    const issuers = await handle.db.selectFrom('issuers').select(['kind', 'certificate']).execute();
    const { toPem } = await import('../../src/ca/pem.ts');
    return {
      kinds: issuers.map((r) => r.kind).sort(),
      rootPem: toPem(issuers.find((r) => r.kind === 'root')!.certificate),
    };
  } finally {
    await handle.close();
  }
}

// The newcomer's path: init through the real binary on an empty database, and again.
describe('keyward init', () => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore();
  });
  afterAll(async () => store.cleanup());

  it('creates a root and an intermediate, and a second init changes nothing', async () => {
    const first = await keyward(['init', '--json'], store.env);
    expect(first.code, first.stderr).toBe(0);
    const created = JSON.parse(first.stdout);
    expect(created.created).toBe(true);
    expect(created.root.subject).toContain('Keyward Root CA');

    // Again in this process (opening the CA as the binary would): nothing changes.
    const second = await runCli(['init'], store.env);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain('already exists; nothing changed');
    expect(second.stdout).toContain(created.root.sha256Fingerprint);

    const { kinds, rootPem } = await rootOf(store);
    expect(kinds).toEqual(['intermediate', 'root']);
    expect(opensslText(rootPem)).toMatch(/CA:TRUE/);
  });
});

// Issuing from CSRs on the command line, in-process on the test CA's context: the same parsing,
// checks, output and exit status as the binary. Every case stands alone on this file's CA.
describe('keyward issue and certs', () => {
  let ca: TestCa;
  let env: Record<string, string>;
  let rootPem: string;
  const cli = (args: string[], e: Record<string, string>) => runCli(args, e, { context: ca.ctx });

  beforeAll(async () => {
    ca = await startTestCa({ serve: false });
    env = ca.env;
    rootPem = ca.rootPem;
  });
  afterAll(async () => ca.close());

  async function certCount(): Promise<number> {
    const r = await cli(['certs', 'list', '--json', '--limit', '1000'], env);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as unknown[]).length;
  }

  it('issue prints a chain, leaf first, that openssl verifies against the root', async () => {
    const { csrPem, dir } = opensslCsr({ san: 'DNS:app.internal,DNS:www.app.internal,IP:10.1.2.3' });
    const csrFile = join(dir, 'req.csr');
    const r = await cli(['issue', '--csr', csrFile], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/Issued serial [0-9a-f]{32}/);
    const verified = opensslVerify(rootPem, r.stdout);
    expect(verified.ok, verified.output).toBe(true);
    const text = opensslText(r.stdout);
    expect(text).toContain('DNS:app.internal, DNS:www.app.internal, IP Address:10.1.2.3');
    expect(text).toContain('TLS Web Server Authentication');
    expect(text).not.toContain('TLS Web Client Authentication');
    expect(csrPem).toContain('CERTIFICATE REQUEST');
  });

  it('the mtls profile adds clientAuth and --ttl sets the lifetime; certs show finds it', async () => {
    const { dir } = opensslCsr({
      keyArgs: ['-newkey', 'rsa:2048'],
      san: 'DNS:svc.internal,URI:spiffe://prod.example/ns/pay/sa/api',
    });
    const r = await cli(['issue', '--csr', join(dir, 'req.csr'), '--profile', 'mtls', '--ttl', '2h', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    const lifetime = Date.parse(out.notAfter) - Date.parse(out.notBefore);
    expect(lifetime).toBe(2 * 3600_000 + 60_000);
    const text = opensslText(out.chainPem);
    expect(text).toContain('TLS Web Client Authentication');
    expect(text).toContain('URI:spiffe://prod.example/ns/pay/sa/api');
    expect(text).toMatch(/Key Encipherment/);

    const show = await cli(['certs', 'show', out.serial, '--json'], env);
    expect(show.code, show.stderr).toBe(0);
    const detail = JSON.parse(show.stdout);
    expect(detail.serial).toBe(out.serial);
    expect(detail.profile).toBe('mtls');
    expect(detail.sans.uri).toEqual(['spiffe://prod.example/ns/pay/sa/api']);
  });

  it("tls-server's default lifetime is 7 days (two certbot runs can be a day apart), back-dated one minute", async () => {
    const { dir } = opensslCsr({ san: 'DNS:short.internal' });
    const r = await cli(['issue', '--csr', join(dir, 'req.csr'), '--json'], env);
    const out = JSON.parse(r.stdout);
    expect(Date.parse(out.notAfter) - Date.parse(out.notBefore)).toBe(7 * 86_400_000 + 60_000);
  });

  const refusals: Array<{ name: string; csr: () => string; args?: string[]; message: RegExp }> = [
    {
      name: 'a CSR whose signature does not verify',
      csr: () => {
        const { csrPem, dir } = opensslCsr({ san: 'DNS:tampered.internal' });
        const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
        der[der.length - 5] = der[der.length - 5]! ^ 0xff;
        const file = join(dir, 'bad.csr');
        writeFileSync(
          file,
          `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`,
        );
        return file;
      },
      message: /badCSR: .*signature/i,
    },
    {
      name: 'an RSA key below 2048 bits',
      csr: () => join(opensslCsr({ keyArgs: ['-newkey', 'rsa:1024'], san: 'DNS:weak.internal' }).dir, 'req.csr'),
      message: /badPublicKey: .*1024/,
    },
    {
      name: 'an unsupported curve',
      csr: () =>
        join(
          opensslCsr({ keyArgs: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'], san: 'DNS:k1.internal' })
            .dir,
          'req.csr',
        ),
      message: /badPublicKey: .*curve/i,
    },
    {
      name: 'a name type the profile does not allow',
      csr: () => join(opensslCsr({ san: 'DNS:a.internal,email:ops@example.com' }).dir, 'req.csr'),
      message: /rejectedIdentifier: .*email/,
    },
    {
      name: 'a lifetime above the profile maximum',
      csr: () => join(opensslCsr({ san: 'DNS:long.internal' }).dir, 'req.csr'),
      args: ['--ttl', '91d'],
      message: /exceeds profile tls-server's maximum/,
    },
    {
      name: 'an unknown profile',
      csr: () => join(opensslCsr({ san: 'DNS:p.internal' }).dir, 'req.csr'),
      args: ['--profile', 'nope'],
      message: /unknown profile "nope"/,
    },
    {
      name: 'a file that is not a CSR',
      csr: () => {
        const { dir } = opensslCsr();
        writeFileSync(join(dir, 'junk.csr'), 'hello');
        return join(dir, 'junk.csr');
      },
      message: /badCSR/,
    },
  ];

  for (const refusal of refusals) {
    it(`refuses ${refusal.name} and stores nothing`, async () => {
      const before = await certCount();
      const r = await cli(['issue', '--csr', refusal.csr(), ...(refusal.args ?? [])], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(refusal.message);
      expect(r.stdout).toBe('');
      expect(await certCount()).toBe(before);
    });
  }

  it('applies the global name policy to a CSR signed from the command line, as ACME does', async () => {
    const add = await cli(['policy', 'add', '--scope', 'global', '--deny', '*.prod.internal', '--json'], env);
    expect(add.code, add.stderr).toBe(0);
    const ruleId = (JSON.parse(add.stdout) as { rule: { id: string } }).rule.id;
    try {
      const before = await certCount();
      const { dir } = opensslCsr({ subject: '/CN=db.prod.internal', san: 'DNS:db.prod.internal' });
      const r = await cli(['issue', '--csr', join(dir, 'req.csr')], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/rejectedIdentifier: .*policy refuses/i);
      expect(r.stdout).toBe('');
      expect(await certCount()).toBe(before);
    } finally {
      const rm = await cli(['policy', 'remove', ruleId], env);
      expect(rm.code, rm.stderr).toBe(0);
    }
  });

  it('honours OCSP must-staple when the profile allows it, and refuses it where the certificate has no OCSP URL', async () => {
    const staple = opensslCsr({ san: 'DNS:staple.internal', addext: ['tlsfeature=status_request'] });
    const r = await cli(['issue', '--csr', join(staple.dir, 'req.csr'), '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(opensslText(JSON.parse(r.stdout).chainPem)).toMatch(/TLS Feature:\s*status_request/);

    // mtls at its default lifetime is passive (no OCSP URL): a must-staple certificate could never be served.
    const mtls = opensslCsr({ san: 'DNS:staple-mtls.internal', addext: ['tlsfeature=status_request'] });
    const before = await certCount();
    const refused = await cli(['issue', '--csr', join(mtls.dir, 'req.csr'), '--profile', 'mtls'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/badCSR: .*must-staple \(TLS feature extension, 1\.3\.6\.1\.5\.5\.7\.1\.24\)/);
    expect(await certCount()).toBe(before);
  });

  it('refuses a requested extension the certificate would not carry, naming it', async () => {
    const eku = opensslCsr({ san: 'DNS:eku.internal', addext: ['extendedKeyUsage=clientAuth'] });
    const r = await cli(['issue', '--csr', join(eku.dir, 'req.csr')], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/badCSR: .*extendedKeyUsage clientAuth, which profile tls-server does not carry/);
    const other = opensslCsr({ san: 'DNS:other.internal', addext: ['1.2.3.4.5=ASN1:UTF8String:hello'] });
    const o = await cli(['issue', '--csr', join(other.dir, 'req.csr')], env);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/badCSR: .*extension 1\.2\.3\.4\.5/);
    // What the profile sets anyway is accepted: openssl's usual v3_req extensions.
    const usual = opensslCsr({
      san: 'DNS:usual.internal',
      addext: ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature', 'extendedKeyUsage=serverAuth'],
    });
    const u = await cli(['issue', '--csr', join(usual.dir, 'req.csr')], env);
    expect(u.code, u.stderr).toBe(0);
  });

  it('names the option when the command line is wrong (the binary: its exit status and stderr)', async () => {
    const r = await keyward(['issue', '--csr', '/nonexistent.csr'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--csr: cannot read /nonexistent.csr (ENOENT)');
    const t = await cli(['issue', '--csr', '/nonexistent.csr', '--ttl', 'soon'], env);
    expect(t.code).toBe(2);
  });

  it('every certificate it printed is in the database, and the audit chain is intact', async () => {
    for (const name of ['one.audit.internal', 'two.audit.internal', 'three.audit.internal']) {
      const issued = await cli(['issue', '--csr', join(opensslCsr({ san: `DNS:${name}` }).dir, 'req.csr')], env);
      expect(issued.code, issued.stderr).toBe(0);
    }
    const db = ca.ctx.database.db;
    const certs = await db.selectFrom('certificates').select(['serial']).execute();
    const reservations = await db.selectFrom('serial_reservations').select(['serial', 'status']).execute();
    expect(certs.length).toBeGreaterThanOrEqual(3);
    // Serial first: every stored certificate had a reservation, now marked issued.
    for (const c of certs) expect(reservations.find((r) => r.serial === c.serial)?.status).toBe('issued');
    const events = await db
      .selectFrom('audit_events')
      .select(['action', 'context'])
      .where('action', '=', 'sign-certificate')
      .execute();
    for (const c of certs)
      expect(events.some((e) => (e.context as Record<string, string>).serial === c.serial)).toBe(true);
    const audit = await cli(['audit', 'verify', '--json'], env);
    expect(audit.code, audit.stderr).toBe(0);
    expect(JSON.parse(audit.stdout)).toMatchObject({ ok: true });
  });
});
