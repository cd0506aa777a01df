import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import { parseDuration } from '../config/duration.ts';
import type { KeyProtection, KeyUsage } from '../db/schema.ts';
import type { AuditListItem } from '../kms/audit-query.ts';
import type { Checkpoint, FullVerification } from '../kms/checkpoints.ts';
import { MAX_DELETION_DAYS, MIN_DELETION_DAYS } from '../kms/deletion-window.ts';
import type { ImportParams, ImportResult } from '../kms/import.ts';
import type { KeyDetail, KeySummary } from '../kms/inventory.ts';
import type { AsymmetricAlg } from '../kms/key-types.ts';
import type { RewrapResult } from '../kms/rewrap.ts';
import type { NewRootOptions, RotateRootResult } from '../kms/rotate-root.ts';
import type { RotateResult } from '../kms/rotation.ts';
import type { RsaScheme } from '../kms/signer.ts';
import type { StateChange } from '../kms/states.ts';
import { type CliCommand, defineCommand, type OptionValues, requireString, UsageError } from './command.ts';
import { cliIo } from './io.ts';
import { promptSecret } from './prompt.ts';
import { describeShares, SHARE_DELIVERY_OPTIONS, shareDeliveryInput } from './shares-commands.ts';

/** The key hierarchy's operations, loaded when a command runs (not to print --help). */
const kms = () => import('./kms-actions.ts');

function readText(file: string, option: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--${option}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

function keyArg(positionals: string[], what: string): string {
  if (!positionals[0]) throw new UsageError(`${what} needs a KEY (a key id, a KEK name, or NAME/vN; see kms list)`);
  return positionals[0];
}

const line = (k: KeySummary) =>
  `${k.kind.padEnd(13)} ${k.id}  ${k.name.padEnd(13)} ${k.state.padEnd(15)} ${k.algorithm.padEnd(11)}${k.protection ? ` ${k.protection.padEnd(7)}` : ''} created ${k.created}${k.rotated ? ` rotated ${k.rotated}` : ''} uses ${k.uses}${k.deletionAt ? ` deletion ${k.deletionAt}` : ''}\n` +
  (k.versions ?? [])
    .map(
      (v) =>
        `    v${v.version}${v.primary ? '*' : ' '} ${v.state.padEnd(15)} root ${v.rootId.slice(0, 8)} created ${v.created} DEKs ${v.wrappedDeks}${v.lastUsed ? ` last used ${v.lastUsed}` : ''}${v.deletionAt ? ` deletion ${v.deletionAt}` : ''}\n`,
    )
    .join('');

const listCommand = defineCommand<object, KeySummary[]>({
  path: ['kms', 'list'],
  usage: 'kms list',
  summary: 'every key: roots of trust, KEKs and their versions, CA/OCSP/audit keys',
  input: () => ({}),
  run: async (ctx) => {
    // Use counts are written once a second; this process's own are written first.
    await ctx.kms.flushUses();
    return (await kms()).listKeys(ctx.database.db);
  },
  format: (out) => out.map(line).join(''),
});

const showCommand = defineCommand<{ key: string }, KeyDetail>({
  path: ['kms', 'show'],
  usage: 'kms show KEY',
  summary: 'one key with its versions, policy and audit count',
  input: (_v, p) => ({ key: keyArg(p, 'kms show') }),
  run: async (ctx, input) => {
    await ctx.kms.flushUses();
    return (await kms()).showKey(ctx.database.db, input.key);
  },
  format: (out) =>
    `${line(out)}` +
    (out.protection
      ? `protection ${out.protection === 'hsm' ? 'hsm (private key in a PKCS#11 token, never extractable)' : 'wrapped (envelope encryption under a KEK)'}\n`
      : '') +
    (out.token
      ? `token ${out.token.token}  label ${out.token.label}  CKA_ID ${out.token.id}\n` +
        `attributes extractable=${out.token.attributes.extractable} sensitive=${out.token.attributes.sensitive} never-extractable=${out.token.attributes.neverExtractable} always-sensitive=${out.token.attributes.alwaysSensitive}\n`
      : '') +
    (out.rsaScheme
      ? `signatures RSA ${out.rsaScheme === 'pss' ? 'PSS (SHA-256, MGF1, salt 32)' : 'PKCS#1 v1.5 (SHA-256)'}\n`
      : '') +
    `${out.policy ? `policy ${JSON.stringify(out.policy)}\n` : ''}audit events ${out.auditEvents}\n`,
});

const ALGS: AsymmetricAlg[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096', 'ed25519'];

interface CreatedKey {
  id: string;
  usage: KeyUsage;
  alg: AsymmetricAlg;
  protection: KeyProtection;
  publicKeyPem: string;
}

const createCommand = defineCommand<
  { usage: KeyUsage; alg: AsymmetricAlg; protection: KeyProtection; rsaScheme?: RsaScheme },
  CreatedKey
>({
  path: ['kms', 'create'],
  usage: 'kms create [--usage U] [--alg A] [--protection wrapped|hsm] [--rsa-scheme pkcs1|pss]',
  summary: 'make a signing key (hsm: generated in the PKCS#11 token of kms.hsm, never extractable)',
  options: {
    usage: { type: 'string' },
    alg: { type: 'string' },
    protection: { type: 'string' },
    'rsa-scheme': { type: 'string' },
  },
  input: (v) => {
    const alg = (v.alg as string | undefined) ?? 'ecdsa-p256';
    if (!ALGS.includes(alg as AsymmetricAlg)) throw new UsageError(`--alg must be one of ${ALGS.join(', ')}`);
    const protection = (v.protection as string | undefined) ?? 'wrapped';
    if (protection !== 'wrapped' && protection !== 'hsm') throw new UsageError('--protection must be wrapped or hsm');
    const scheme = v['rsa-scheme'] as string | undefined;
    if (scheme !== undefined && scheme !== 'pkcs1' && scheme !== 'pss')
      throw new UsageError('--rsa-scheme must be pkcs1 or pss');
    if (scheme !== undefined && !alg.startsWith('rsa-'))
      throw new UsageError('--rsa-scheme is for RSA keys (--alg rsa-…)');
    return { usage: usageOf(v), alg: alg as AsymmetricAlg, protection, rsaScheme: scheme };
  },
  run: async (ctx, input) => {
    const key = await ctx.kms.createKey(ctx.database.db, input);
    return {
      id: key.id,
      usage: input.usage,
      alg: input.alg,
      protection: key.protection,
      publicKeyPem: key.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    };
  },
  format: (out) =>
    `Created ${out.alg} key ${out.id} (usage ${out.usage}, protection ${out.protection}${out.protection === 'hsm' ? ': generated in the token, never extractable' : ''}).\n${out.publicKeyPem}`,
});

const rotateCommand = defineCommand<
  { kek: string; autoDays?: number | null },
  RotateResult | { kek: string; autoRotateDays: number | null }
>({
  path: ['kms', 'rotate'],
  usage: 'kms rotate [KEK] [--auto-days N|off]',
  summary: 'add a KEK version and make it primary (default KEK ca-keys); --auto-days sets automatic rotation',
  options: { 'auto-days': { type: 'string' } },
  input: (values, p) => {
    const auto = values['auto-days'];
    let autoDays: number | null | undefined;
    if (typeof auto === 'string') {
      autoDays = auto === 'off' ? null : Number(auto);
      if (autoDays !== null && (!Number.isInteger(autoDays) || autoDays < 1))
        throw new UsageError('--auto-days must be a positive whole number or off');
    }
    return { kek: p[0] ?? 'ca-keys', autoDays };
  },
  run: async (ctx, input) => {
    const { rotateKek, setAutoRotate } = await kms();
    if (input.autoDays !== undefined) {
      await setAutoRotate(ctx.kms, ctx.database.db, input.kek, input.autoDays, input.principal);
      return { kek: input.kek, autoRotateDays: input.autoDays };
    }
    return rotateKek(ctx.kms, ctx.database.db, input.kek, input.principal);
  },
  format: (out) =>
    'version' in out
      ? `KEK ${out.name}: version ${out.version} is now primary (was ${out.previousVersion}); older versions still unwrap. Run kms rewrap to move DEKs.\n`
      : `KEK ${out.kek}: automatic rotation ${out.autoRotateDays === null ? 'off' : `every ${out.autoRotateDays} days`}.\n`,
});

const rewrapCommand = defineCommand<{ kek: string; pid: number; progress: boolean }, RewrapResult>({
  path: ['kms', 'rewrap'],
  usage: 'kms rewrap [KEK]',
  summary: 'move every DEK to the primary KEK version (resumable, safe while serving)',
  input: (_v, p) => ({ kek: p[0] ?? 'ca-keys', pid: process.pid, progress: true }),
  run: async (ctx, input) =>
    (await kms()).rewrap(ctx.kms, ctx.database.db, {
      kek: input.kek,
      principal: input.principal,
      // The bar goes to the CLI's own stderr only: through the admin socket this runs in the server.
      onProgress: input.progress && input.pid === process.pid ? (p) => progressBar(p) : undefined,
    }),
  format: (out) =>
    `KEK ${out.name}: ${out.rewrapped} DEK(s) re-wrapped under version ${out.primaryVersion}.${out.unusedVersions.length ? ` Versions now unused: ${out.unusedVersions.join(', ')}.` : ''}\n`,
});

function progressBar(p: { done: number; total: number }, what = 'rewrap'): void {
  const width = 30;
  const frac = p.total === 0 ? 1 : Math.min(1, p.done / p.total);
  const filled = Math.round(frac * width);
  cliIo().stderr(
    `\r${what} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.done}/${p.total}${frac === 1 ? '\n' : ''}`,
  );
}

const disableCommand = defineCommand<{ key: string; force: boolean }, StateChange>({
  path: ['kms', 'disable'],
  usage: 'kms disable KEY [--force]',
  summary: 'a disabled key cannot sign, unwrap or encrypt (on every replica at once)',
  options: { force: { type: 'boolean', default: false } },
  input: (v, p) => ({ key: keyArg(p, 'kms disable'), force: v.force === true }),
  dualControl: async (ctx, input) => {
    const usage = await (await kms()).keyUsageOf(ctx.database.db, input.key);
    // Disabling a CA key stops issuance, CRLs and OCSP: it needs a second operator.
    return usage === 'root-ca' || usage === 'intermediate' ? `disable the ${usage} key ${input.key}` : null;
  },
  run: async (ctx, input) =>
    (await kms()).keyStatesWithCaChecks(ctx.kms, ctx.database.db).disable(input.key, input.principal, input.force),
  format: (out) => `${out.description} is now ${out.state} (was ${out.previousState}).\n`,
});

const enableCommand = defineCommand<{ key: string }, StateChange>({
  path: ['kms', 'enable'],
  usage: 'kms enable KEY',
  summary: 'enable a disabled key',
  input: (_v, p) => ({ key: keyArg(p, 'kms enable') }),
  run: async (ctx, input) =>
    (await kms()).keyStatesWithCaChecks(ctx.kms, ctx.database.db).enable(input.key, input.principal),
  format: (out) => `${out.description} is now ${out.state} (was ${out.previousState}).\n`,
});

const scheduleDeletionCommand = defineCommand<{ key: string; days: number; force: boolean }, StateChange>({
  path: ['kms', 'schedule-deletion'],
  usage: `kms schedule-deletion KEY --days N [--force]`,
  summary: `destroy a key after N days (${MIN_DELETION_DAYS}-${MAX_DELETION_DAYS}); cancellable until then`,
  options: { days: { type: 'string' }, force: { type: 'boolean', default: false } },
  input: (v, p) => {
    const key = keyArg(p, 'kms schedule-deletion');
    const days = Number(requireString(v, 'days', 'kms schedule-deletion'));
    if (!Number.isInteger(days) || days < MIN_DELETION_DAYS || days > MAX_DELETION_DAYS) {
      throw new UsageError(
        `--days must be a whole number from ${MIN_DELETION_DAYS} to ${MAX_DELETION_DAYS} (got ${String(v.days)})`,
      );
    }
    return { key, days, force: v.force === true };
  },
  run: async (ctx, input) =>
    (await kms())
      .keyStatesWithCaChecks(ctx.kms, ctx.database.db)
      .scheduleDeletion(input.key, input.days, input.principal, input.force),
  dualControl: (_ctx, input) =>
    Promise.resolve(`schedule deletion of ${input.key} in ${input.days} days${input.force ? ' (--force)' : ''}`),
  format: (out) =>
    (out.unrecoverable.length
      ? `WARNING: --force given; when the window ends this becomes unrecoverable:\n${out.unrecoverable.map((u) => `  - ${u}\n`).join('')}` +
        'Note: database backups, WAL archives and dead tuples keep the old ciphertext; it stays decryptable while its KEK version and root live.\n'
      : '') +
    `${out.description} is PendingDeletion; it will be destroyed at ${out.deletionAt} unless you run kms cancel-deletion.\n`,
});

const cancelDeletionCommand = defineCommand<{ key: string }, StateChange>({
  path: ['kms', 'cancel-deletion'],
  usage: 'kms cancel-deletion KEY',
  summary: 'cancel a scheduled deletion; the key becomes Disabled',
  input: (_v, p) => ({ key: keyArg(p, 'kms cancel-deletion') }),
  run: async (ctx, input) =>
    (await kms()).keyStatesWithCaChecks(ctx.kms, ctx.database.db).cancelDeletion(input.key, input.principal),
  format: (out) => `${out.description}: deletion cancelled; it is now ${out.state} (kms enable to use it again).\n`,
});

const putPolicyCommand = defineCommand<{ key: string; policy: unknown }, { key: string; statements: number }>({
  path: ['kms', 'put-policy'],
  usage: 'kms put-policy KEY --file policy.json',
  summary: 'replace a key policy (actions × principals × conditions; explicit deny wins)',
  options: { file: { type: 'string' } },
  input: (v, p) => {
    const file = requireString(v, 'file', 'kms put-policy');
    try {
      return { key: keyArg(p, 'kms put-policy'), policy: JSON.parse(readText(file, 'file')) as unknown };
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`--file: ${file} is not JSON`);
    }
  },
  run: async (ctx, input) =>
    (await kms()).putKeyPolicy(ctx.kms, ctx.database.db, input.key, input.policy, input.principal),
  format: (out) => `Policy of ${out.key} replaced (${out.statements} statement(s)).\n`,
});

const createKeyCommand = defineCommand<{ name: string; allow: string[] }, { id: string; name: string }>({
  path: ['kms', 'create-key'],
  usage: 'kms create-key NAME [--allow PRINCIPAL]...',
  summary: 'create an app-data key for the data-key API (denies everyone not allowed)',
  options: { allow: { type: 'string', multiple: true } },
  input: (v, p) => {
    if (!p[0]) throw new UsageError('kms create-key needs a NAME');
    const allow = Array.isArray(v.allow) ? v.allow.filter((a): a is string => typeof a === 'string') : [];
    return { name: p[0], allow };
  },
  run: async (ctx, input) =>
    new (await kms()).DataKeys(ctx.kms, ctx.database.db).createKey(input.name, input.allow, input.principal),
  format: (out) => `Created data key ${out.name} (${out.id}).\n`,
});

const USAGES: KeyUsage[] = ['root-ca', 'intermediate', 'ocsp', 'audit', 'provisioner', 'tls'];

function usageOf(v: OptionValues): KeyUsage {
  const usage = (v.usage as string | undefined) ?? 'intermediate';
  if (!USAGES.includes(usage as KeyUsage)) throw new UsageError(`--usage must be one of ${USAGES.join(', ')}`);
  return usage as KeyUsage;
}

type ImportInput =
  | { mode: 'plain'; keyPem: string; passphrase?: string; certPem: string; usage: KeyUsage }
  | { mode: 'wrapped'; blob: string; token: string; certPem: string };

const importCommand = defineCommand<ImportInput, ImportResult>({
  path: ['kms', 'import'],
  usage: 'kms import --cert FILE (--key FILE [--passphrase-file F] [--usage U] | --wrapped FILE --token T)',
  summary: 'bring your own key: wrap an existing CA key that matches the certificate',
  options: {
    key: { type: 'string' },
    cert: { type: 'string' },
    wrapped: { type: 'string' },
    token: { type: 'string' },
    usage: { type: 'string' },
    'passphrase-file': { type: 'string' },
  },
  input: (v) => {
    const certPem = readText(requireString(v, 'cert', 'kms import'), 'cert');
    if (typeof v.wrapped === 'string') {
      const token = requireString(v, 'token', 'kms import --wrapped');
      let blob: Buffer;
      try {
        blob = readFileSync(v.wrapped);
      } catch (err) {
        throw new UsageError(`--wrapped: cannot read ${v.wrapped} (${(err as NodeJS.ErrnoException).code})`);
      }
      return { mode: 'wrapped', blob: blob.toString('base64'), token, certPem };
    }
    const keyPem = readText(requireString(v, 'key', 'kms import'), 'key');
    const pf = v['passphrase-file'];
    return {
      mode: 'plain',
      keyPem,
      passphrase: typeof pf === 'string' ? readText(pf, 'passphrase-file').replace(/\r?\n$/, '') : undefined,
      certPem,
      usage: usageOf(v),
    };
  },
  dualControl: async (ctx, input) => {
    const usage =
      input.mode === 'plain' ? input.usage : await (await kms()).importJobUsage(ctx.database.db, input.token);
    return usage === 'root-ca' ? `import a root CA key (${input.mode})` : null;
  },
  run: async (ctx, input) => {
    const { certificateSpki, importPlainKey, importWrapped, parsePrivateKeyPem } = await kms();
    const expectedSpki = certificateSpki(input.certPem);
    if (input.mode === 'wrapped') {
      return importWrapped(ctx.kms, ctx.database.db, {
        blob: Buffer.from(input.blob, 'base64'),
        token: input.token,
        expectedSpki,
        principal: input.principal,
      });
    }
    return importPlainKey(ctx.kms, ctx.database.db, {
      privateKey: parsePrivateKeyPem(input.keyPem, input.passphrase),
      expectedSpki,
      usage: input.usage,
      principal: input.principal,
    });
  },
  format: (out) => `Imported ${out.alg} key ${out.keyId} (${out.usage}), SPKI SHA-256 ${out.spkiSha256}.\n`,
});

const importParamsCommand = defineCommand<{ usage: KeyUsage; out?: string }, ImportParams>({
  path: ['kms', 'import-params'],
  usage: 'kms import-params [--usage U]',
  summary: 'an RSA-3072 OAEP-SHA-256 wrapping key and a single-use import token (24 h)',
  options: { usage: { type: 'string' } },
  input: (v) => ({ usage: usageOf(v) }),
  run: async (ctx, input) =>
    (await kms()).createImportJob(ctx.kms, ctx.database.db, { usage: input.usage, principal: input.principal }),
  format: (out) =>
    `Import job ${out.jobId} for key ${out.keyId}; token valid until ${out.expiresAt}.\nToken: ${out.importToken}\nWrap with RSA-OAEP-SHA-256(ephemeral AES-256 key) || AES-KWP(PKCS#8 DER), to:\n${out.wrappingPublicKeyPem}`,
});

const auditListCommand = defineCommand<
  { key?: string; since?: string; sinceMs?: number; limit?: number },
  AuditListItem[]
>({
  path: ['audit', 'list'],
  usage: 'audit list [--key K] [--since TIME|DURATION] [--limit N]',
  summary: 'audit events, oldest first (every key use and change)',
  options: { key: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } },
  input: (v) => {
    const since = v.since as string | undefined;
    let sinceMs: number | undefined;
    let sinceIso: string | undefined;
    if (since !== undefined) {
      if (/^\d+[smhd]/.test(since)) sinceMs = parseDuration(since);
      else if (Number.isNaN(Date.parse(since)))
        throw new UsageError('--since takes an ISO time (2025-01-31T12:00Z) or a duration (2h)');
      else sinceIso = since;
    }
    const limit = v.limit === undefined ? undefined : Number(v.limit);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
      throw new UsageError('--limit must be a positive whole number');
    return { key: v.key as string | undefined, since: sinceIso, sinceMs, limit };
  },
  run: async (ctx, input) => {
    const { listAudit, resolveKey } = await kms();
    const keyId = input.key ? (await resolveKey(ctx.database.db, input.key)).id : undefined;
    return listAudit(ctx.database.db, { keyId, since: input.since, sinceMs: input.sinceMs, limit: input.limit });
  },
  format: (out) =>
    out.length
      ? out
          .map(
            (e) =>
              `${String(e.seq).padStart(6)} ${e.ts} ${e.outcome.padEnd(7)} ${e.action.padEnd(20)} ${e.principal} ${e.keyId ?? '-'}${e.keyVersion ? `/v${e.keyVersion}` : ''}${e.errorCode ? ` ${e.errorCode}` : ''} ${JSON.stringify(e.context)}\n`,
          )
          .join('')
      : 'No events.\n',
});

const auditVerifyCommand = defineCommand<{ checkpoints?: string }, FullVerification>({
  path: ['audit', 'verify'],
  usage: 'audit verify [--checkpoints FILE]...',
  summary: "check the audit log's keyed hash chain and signed checkpoints (and exported copies)",
  options: { checkpoints: { type: 'string', multiple: true } },
  input: (v) => {
    const files = [v.checkpoints].flat().filter((f): f is string => typeof f === 'string');
    return { checkpoints: files.length ? files.map((f) => readText(f, 'checkpoints')).join('\n') : undefined };
  },
  run: async (ctx, input) => {
    const { parseCheckpointLines, verifyAuditWithCheckpoints } = await kms();
    return verifyAuditWithCheckpoints(
      ctx.kms.audit,
      ctx.database.db,
      input.checkpoints === undefined ? undefined : parseCheckpointLines(input.checkpoints),
    );
  },
  format: (out) => {
    if (!out.ok)
      return `The audit log is broken at event ${out.firstBad!.seq}: ${out.firstBad!.detail} (${out.firstBad!.problem}).\n`;
    const legacy =
      out.keyedFrom !== null && out.keyedFrom > 1
        ? ` Events 1–${out.keyedFrom - 1} predate the chain key: only signed checkpoints vouch for them.`
        : '';
    const tail = out.keyOnlyEvents
      ? ` The ${out.keyOnlyEvents} event(s) after ${out.lastCheckpointSeq ? `the checkpoint at event ${out.lastCheckpointSeq}` : 'the start (no checkpoint yet)'} were checked with the chain key only.`
      : '';
    return `The audit log is intact: ${out.events} events, ${out.checkpoints} signed checkpoint(s)${out.externalCheckpoints ? `, ${out.externalCheckpoints} exported checkpoint(s) matched` : ''}.${legacy}${tail}\n`;
  },
  exitCode: (out) => (out.ok ? 0 : 1),
});

const checkpointCommand = defineCommand<object, Checkpoint | null>({
  path: ['audit', 'checkpoint'],
  usage: 'audit checkpoint',
  summary: 'sign the current audit chain head now and export it (the server also does this periodically)',
  input: () => ({}),
  run: async (ctx, input) => {
    const { createCheckpoint, exportCheckpoint } = await kms();
    const c = await createCheckpoint(ctx.kms, ctx.database.db, input.principal);
    // A standard-output sink is this command's own output.
    if (c && ctx.config.kms.checkpointExport !== '-') exportCheckpoint(ctx.config.kms.checkpointExport, c);
    return c ?? null;
  },
  format: (out) =>
    out ? `Checkpoint at event ${out.seq} signed by key ${out.keyId}.\n` : 'The head is already checkpointed.\n',
});

const checkpointsExportCommand = defineCommand<object, Checkpoint[]>({
  path: ['audit', 'checkpoints', 'export'],
  usage: 'audit checkpoints export > FILE',
  summary: 'print the signed checkpoints as JSON lines, to keep elsewhere (WORM storage)',
  input: () => ({}),
  run: async (ctx) => (await kms()).listCheckpoints(ctx.database.db),
  format: (out) => out.map((c) => JSON.stringify(c) + '\n').join(''),
});

const rotateRootCommand = defineCommand<{ target: NewRootOptions; pid: number }, RotateRootResult>({
  path: ['kms', 'rotate-root'],
  usage:
    'kms rotate-root --to file|passphrase|pkcs11|awskms|shares [--path F] [--passphrase-file F] [--module M --token T --key-label L --pin-file F] [--key-arn ARN [--region R]] [--threshold M --shares N [--share-dir D [--holder-key K]...]]',
  summary: 'move every KEK to a new root of trust (resumable, crash-safe)',
  options: {
    to: { type: 'string' },
    path: { type: 'string' },
    'passphrase-file': { type: 'string' },
    module: { type: 'string' },
    token: { type: 'string' },
    'key-label': { type: 'string' },
    'pin-file': { type: 'string' },
    'key-arn': { type: 'string' },
    region: { type: 'string' },
    threshold: { type: 'string' },
    shares: { type: 'string' },
    ...SHARE_DELIVERY_OPTIONS,
  },
  input: async (v) => {
    const to = requireString(v, 'to', 'kms rotate-root');
    if (to === 'shares') {
      const n = (name: string) => {
        const x = Number(requireString(v, name, 'kms rotate-root --to shares'));
        if (!Number.isInteger(x) || x < 2 || x > 32)
          throw new UsageError(`--${name} must be a whole number from 2 to 32`);
        return x;
      };
      const threshold = n('threshold');
      const count = n('shares');
      if (count < threshold) throw new UsageError('--shares must be at least --threshold');
      return { target: { type: 'shares', threshold, count, delivery: shareDeliveryInput(v) }, pid: process.pid };
    }
    if (to === 'file')
      return {
        target: { type: 'file', path: resolve(requireString(v, 'path', 'kms rotate-root --to file')) },
        pid: process.pid,
      };
    if (to === 'passphrase') {
      const pf = v['passphrase-file'];
      // Never from argv; a file or the terminal.
      const passphrase =
        typeof pf === 'string'
          ? readText(pf, 'passphrase-file').replace(/\r?\n$/, '')
          : cliIo().stdin.isTTY
            ? await promptSecret('New root passphrase: ')
            : '';
      if (!passphrase)
        throw new UsageError('kms rotate-root --to passphrase needs --passphrase-file or a terminal to ask on');
      return { target: { type: 'passphrase', passphrase }, pid: process.pid };
    }
    if (to === 'pkcs11') {
      const params = {
        module: requireString(v, 'module', 'kms rotate-root --to pkcs11'),
        token: requireString(v, 'token', 'kms rotate-root --to pkcs11'),
        keyLabel: requireString(v, 'key-label', 'kms rotate-root --to pkcs11'),
        pinFile: resolve(requireString(v, 'pin-file', 'kms rotate-root --to pkcs11')),
      };
      return { target: { type: 'pkcs11', params }, pid: process.pid };
    }
    if (to === 'awskms') {
      return {
        target: {
          type: 'awskms',
          params: {
            keyArn: requireString(v, 'key-arn', 'kms rotate-root --to awskms'),
            region: v.region as string | undefined,
          },
        },
        pid: process.pid,
      };
    }
    throw new UsageError('--to must be file, passphrase, pkcs11, awskms or shares');
  },
  dualControl: (_ctx, input) => Promise.resolve(`move every KEK to a new ${input.target.type} root of trust`),
  run: async (ctx, input) =>
    (await kms()).rotateRoot(
      ctx.kms,
      ctx.database.db,
      input.target,
      input.principal,
      input.pid === process.pid ? (p) => progressBar(p, 'rotate-root') : undefined,
    ),
  format: (out) =>
    (out.shares ? describeShares(out.shares) : '') +
    `KEKs now wrapped by ${out.provider} root ${out.rootId} (${out.kekVersions} version(s), ${out.rewrapped} this run); root ${out.previousRootId} is retired.\n` +
    (out.provider === 'pkcs11' || out.provider === 'awskms'
      ? ''
      : `Set rootOfTrust.type to ${out.provider} in the configuration before the next start.\n`),
});

export const kmsCommands: CliCommand[] = [
  rotateRootCommand,
  listCommand,
  showCommand,
  createCommand,
  rotateCommand,
  rewrapCommand,
  disableCommand,
  enableCommand,
  scheduleDeletionCommand,
  cancelDeletionCommand,
  putPolicyCommand,
  createKeyCommand,
  importCommand,
  importParamsCommand,
  auditListCommand,
  auditVerifyCommand,
  checkpointCommand,
  checkpointsExportCommand,
];
