import { writeFileSync } from 'node:fs';

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

import { DEFAULT_RENEWAL_WINDOW } from '../../src/ca/issuer-expiry.ts';
import { addIntermediate, type IssuerLifecycleDeps } from '../../src/ca/issuer-lifecycle.ts';
import { RENEWAL_PRINCIPAL, renewIssuers } from '../../src/ca/issuer-renewal.ts';
import { toPem } from '../../src/ca/pem.ts';
import { commandsByName } from '../../src/cli/registry.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { IssuerRow } from '../../src/db/schema.ts';
import { type RunningServer, startServer } from '../../src/server.ts';
import { issueLeaf, waitFor } from '../revocation/helpers.ts';
import { startTestCa, type TestCa, testCaTemplate } from '../support/ca.ts';
import { cli } from '../support/cli.ts';
import { captureLog } from '../support/log.ts';
import { opensslVerify } from '../support/openssl.ts';

const DAY = 86_400_000;

function depsOf(ca: TestCa, clock?: IssuerLifecycleDeps['clock']): IssuerLifecycleDeps {
  return {
    db: ca.ctx.database.db,
    kms: ca.ctx.kms,
    registry: ca.ctx.ca.registry,
    profiles: [...ca.ctx.config.profiles.keys()],
    organization: 'Keyward',
    ...(clock ? { clock } : {}),
  };
}

/**
 * The default intermediate made 300 days ago with a one-year life: 65 days left, inside the default
 * window (180 days), while a successor made now (one year) is not.
 */
function dueIntermediate(ca: TestCa): Promise<IssuerRow> {
  const past = { now: () => new Date(Date.now() - 300 * DAY) };
  return addIntermediate(
    depsOf(ca, past),
    { keyType: 'ecdsa-p256', lifetimeMs: 365 * DAY, commonName: 'Keyward Ageing CA', profiles: [] },
    'test',
    true,
  );
}

const renewalAudit = (ca: TestCa) =>
  ca.ctx.database.db
    .selectFrom('audit_events')
    .select(['action', 'principal'])
    .where('principal', '=', RENEWAL_PRINCIPAL)
    .where('action', 'in', ['add-issuer', 'issuer-state'])
    .orderBy('seq')
    .execute();

// One CA per file; each case works on a copy of it (testCaTemplate).
let template: Awaited<ReturnType<typeof testCaTemplate>>;
beforeAll(async () => {
  template = await testCaTemplate();
});
afterAll(async () => template?.close());

describe('automatic renewal of intermediates', () => {
  let ca: TestCa;
  let server: RunningServer | undefined;

  beforeEach(async () => {
    ca = await template.copy();
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
    await ca?.close();
  });

  it('serve rotates a due intermediate at start; leaves chain to the successor; a second run rotates nothing', async () => {
    const old = await dueIntermediate(ca);
    expect((await ca.ctx.ca.issuerForProfile('tls-server')).id).toBe(old.id);

    // Switched off, the job only warns, and says so.
    const off = captureLog();
    const warned = await renewIssuers(depsOf(ca), {
      window: DEFAULT_RENEWAL_WINDOW,
      automatic: false,
      log: off.logger,
    });
    expect(warned.rotated).toEqual([]);
    expect(off.lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^intermediate ${old.id} expires .* \\(6[45] days left\\); keyward ca rotate-intermediate ${old.id} \\(not rotated automatically: automatic renewal is off \\(ca.renewal.automatic\\)\\)$`,
        ),
      ),
    ]);
    expect((await ca.ctx.ca.issuerForProfile('tls-server')).id).toBe(old.id);

    const log = captureLog();
    server = await startServer(ca.ctx, log.logger, commandsByName);
    const rotated = await waitFor('the renewal job to rotate at start', async () =>
      log.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith(`rotated intermediate ${old.id}`)),
    );
    const successorId = rotated.successor as string;
    const rows = await ca.ctx.ca.issuers();
    const successor = rows.find((r) => r.id === successorId)!;
    expect(rows.find((r) => r.id === old.id)!.state).toBe('retiring');
    expect([successor.state, successor.replaces, successor.parent_id, successor.subject]).toEqual([
      'active',
      old.id,
      old.parent_id,
      old.subject,
    ]);
    // A fresh year, not the old certificate's remainder.
    expect(successor.not_after.getTime() - Date.now()).toBeGreaterThan(364 * DAY);
    expect(await renewalAudit(ca)).toEqual([
      { action: 'add-issuer', principal: RENEWAL_PRINCIPAL },
      { action: 'issuer-state', principal: RENEWAL_PRINCIPAL },
    ]);
    // Nothing is due any more, so nothing is warned about.
    expect(log.lines.filter((l) => l.level === 40 && l.feature === 'issuer-renewal')).toEqual([]);

    const leaf = await issueLeaf(ca, { name: 'after.internal' });
    expect(leaf.issuerId).toBe(successorId);
    expect(leaf.chainPem).toContain(toPem(successor.certificate));
    expect(opensslVerify(ca.rootPem, leaf.chainPem).ok).toBe(true);

    const again = await renewIssuers(depsOf(ca), { window: DEFAULT_RENEWAL_WINDOW, automatic: true, log: log.logger });
    expect(again.rotated).toEqual([]);
    expect((await ca.ctx.ca.issuers()).filter((r) => r.replaces === old.id)).toHaveLength(1);
    expect(await renewalAudit(ca)).toHaveLength(2);
  });
});

describe('a root near its end', () => {
  let ca: TestCa;

  // A root of 2000 hours (83 days): it and the intermediate init caps at it are both due.
  beforeAll(async () => {
    ca = await startTestCa({ serve: false, settings: { ca: { root: { lifetime: '2000h' } } } });
  });
  afterAll(async () => ca?.close());

  it('is warned about, never rotated; its intermediate is left too, since a successor would be due at once', async () => {
    const [root, inter] = await ca.ctx.ca.issuers();
    const log = captureLog();
    const run = await renewIssuers(depsOf(ca), { window: DEFAULT_RENEWAL_WINDOW, automatic: true, log: log.logger });
    expect(run.rotated).toEqual([]);
    expect(await ca.ctx.ca.issuers()).toHaveLength(2);
    expect(await renewalAudit(ca)).toEqual([]);
    const warnings = log.lines.filter((l) => l.level === 40);
    expect(warnings.map((l) => [l.issuer, l.fix])).toEqual([
      [root!.id, 'keyward ca rotate-root'],
      [inter!.id, `keyward ca rotate-root, then keyward ca rotate-intermediate ${inter!.id}`],
    ]);
    expect(warnings[0]!.msg).toMatch(
      new RegExp(
        `^root ${root!.id} expires .* \\(8[23] days left\\); keyward ca rotate-root \\(not rotated automatically: roots are never rotated automatically\\)$`,
      ),
    );
    expect(warnings[1]!.msg).toContain(`a successor would expire with root ${root!.id}`);

    const json = await cli(['ca', 'issuers', '--json'], ca.env, { context: ca.ctx });
    expect(json.code, json.stderr).toBe(0);
    const list = JSON.parse(json.stdout) as { id: string; expiryWarning?: { fix: string; why?: string } }[];
    expect(list.map((i) => i.expiryWarning?.fix)).toEqual([
      'keyward ca rotate-root',
      `keyward ca rotate-root, then keyward ca rotate-intermediate ${inter!.id}`,
    ]);
    expect(list[0]!.expiryWarning?.why).toBe('roots are never rotated automatically');

    const tree = await cli(['ca', 'issuers'], ca.env, { context: ca.ctx });
    expect(tree.code, tree.stderr).toBe(0);
    expect(tree.stdout).toMatch(new RegExp(`^root ${root!.id}  active \\(due\\)`, 'm'));
    expect(tree.stdout).toMatch(/^ {4}! DUE FOR RENEWAL: 8[23] days left; keyward ca rotate-root \(not automatic: /m);
    expect(tree.stdout).toMatch(new RegExp(`└ intermediate ${inter!.id}  active \\(due\\)`));
  });
});

describe('the renewal window (ca.renewal)', () => {
  it('a narrower window leaves the same 83-day root unflagged; a bad value names the setting', async () => {
    const ca = await startTestCa({
      serve: false,
      settings: { ca: { root: { lifetime: '2000h' }, renewal: { shareLeft: 0.1, timeLeft: '30d' } } },
    });
    try {
      const json = await cli(['ca', 'issuers', '--json'], ca.env, { context: ca.ctx });
      expect(json.code, json.stderr).toBe(0);
      expect((JSON.parse(json.stdout) as { expiryWarning?: unknown }[]).map((i) => i.expiryWarning)).toEqual([
        undefined,
        undefined,
      ]);
      writeFileSync(ca.configFile, stringify({ ca: { renewal: { shareLeft: 1.5 } } }));
      expect(() => loadConfig({ configFile: ca.configFile, dataDir: ca.store.dataDir, env: {} })).toThrow(
        /ca\.renewal\.shareLeft: Too big: expected number to be <1/,
      );
    } finally {
      await ca.close();
    }
  });
});

describe('the check in serve', () => {
  it('warns at start and again every ca.renewal.checkInterval', async () => {
    // The 83-day root of above: due, never rotated, so every round warns about it again.
    const ca = await startTestCa({
      serve: false,
      settings: { ca: { root: { lifetime: '2000h' }, renewal: { checkInterval: '1s' } } },
    });
    const log = captureLog();
    const server = await startServer(ca.ctx, log.logger, commandsByName);
    try {
      const [root] = await ca.ctx.ca.issuers();
      const rootWarnings = () =>
        log.lines.filter((l) => l.level === 40 && l.feature === 'issuer-renewal' && l.issuer === root!.id);
      await waitFor('a second round of warnings', async () => (rootWarnings().length >= 2 ? true : undefined));
      expect(rootWarnings()[1]!.msg).toBe(rootWarnings()[0]!.msg);
      expect(await ca.ctx.ca.issuers()).toHaveLength(2);
    } finally {
      await server.close();
      await ca.close();
    }
  });
});

// PGlite admits one process, so two replicas on one database need PostgreSQL.
describe.runIf(!!process.env.DATABASE_URL)('two replicas running the renewal job at once', () => {
  let a: TestCa;
  let b: TestCa;

  beforeAll(async () => {
    a = await startTestCa({ serve: false });
    b = await startTestCa({ serve: false, store: a.store });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it('rotate exactly once, and both issue from the successor without a restart', async () => {
    const stops = [
      await a.ctx.ca.followIssuers(a.ctx.database.listen),
      await b.ctx.ca.followIssuers(b.ctx.database.listen),
    ];
    try {
      const old = await dueIntermediate(a);
      await waitFor(
        'replica b to see the new issuer',
        async () => (await b.ctx.ca.issuerForProfile('tls-server')).id === old.id,
        5_000,
      );
      const opts = { window: DEFAULT_RENEWAL_WINDOW, automatic: true };
      const [ra, rb] = await Promise.all([
        renewIssuers(depsOf(a), { ...opts, log: captureLog().logger }),
        renewIssuers(depsOf(b), { ...opts, log: captureLog().logger }),
      ]);
      expect(ra.rotated.length + rb.rotated.length).toBe(1);
      const successors = (await a.ctx.ca.issuers()).filter((r) => r.replaces === old.id);
      expect(successors).toHaveLength(1);
      expect(await renewalAudit(a)).toHaveLength(2);

      for (const replica of [a, b]) {
        await waitFor(
          'the replica to see the rotation',
          async () => (await replica.ctx.ca.issuerForProfile('tls-server')).id === successors[0]!.id,
          5_000,
        );
        const leaf = await issueLeaf(replica);
        expect(leaf.issuerId).toBe(successors[0]!.id);
        expect(opensslVerify(replica.rootPem, leaf.chainPem).ok).toBe(true);
      }
    } finally {
      for (const stop of stops) await stop();
    }
  });
});
