import { randomUUID } from 'node:crypto';
import type { TLSSocket } from 'node:tls';

import type { HttpBindings } from '@hono/node-server';
import type { Context, Hono } from 'hono';

import type { AppContext } from '../context.ts';
import { startLoop } from '../core/background-loop.ts';
import { nodeIncoming, readBodyText } from '../core/body.ts';
import { KeywardError } from '../core/errors.ts';
import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';
import { normalizeSerial } from '../core/serial.ts';
import { withLease } from '../db/lease.ts';
import { checkpointIfDue, exportCheckpoint } from '../kms/checkpoints.ts';
import { DataKeys, MAX_PLAINTEXT } from '../kms/data-keys.ts';
import { KmsError } from '../kms/errors.ts';
import { runJanitor } from '../kms/janitor.ts';

const MAX_BODY = 64 * 1024;

/** The client certificate's identity: URI SAN (SPIFFE id) first, else the first DNS SAN. */
export function principalOf(subjectAltName: string | undefined): string | undefined {
  const names = (subjectAltName ?? '').split(/,\s*/);
  const uri = names.find((n) => n.startsWith('URI:'));
  if (uri) return uri.slice(4);
  const dns = names.find((n) => n.startsWith('DNS:'));
  return dns?.slice(4);
}

type Ctx = Record<string, string>;

function asContext(value: unknown, field: string): Ctx {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw new KmsError('InvalidInput', `${field} must be an object of string values`);
  }
  return value as Ctx;
}

function asString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new KmsError('InvalidInput', `${field} is required`);
  return value;
}

function b64(value: unknown, field: string): Buffer {
  const s = asString(value, field);
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(s)) throw new KmsError('InvalidInput', `${field} is not base64`);
  return Buffer.from(s, 'base64');
}

/**
 * The data-key API over mTLS, and the KMS janitor. Clients authenticate with a certificate from
 * this CA: node checks the chain against our roots (requestCert with rejectUnauthorized false, so
 * the refusal is ours to phrase), and we also refuse certificates this CA has revoked.
 */
export function kmsFeature(ctx: AppContext, log: Logger): Feature {
  const dataKeys = new DataKeys(ctx.kms, ctx.database.db);

  async function authenticate(c: Context): Promise<string> {
    const refuse = (detail: string) => new KeywardError('unauthenticated', detail);
    const socket = (c.env as HttpBindings | undefined)?.incoming?.socket as TLSSocket | undefined;
    if (!socket || typeof socket.getPeerCertificate !== 'function')
      throw refuse('the data-key API needs HTTPS with a client certificate');
    const cert = socket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) throw refuse('a client certificate from this CA is required');
    if (!socket.authorized)
      throw refuse(`the client certificate is not from this CA (${String(socket.authorizationError)})`);
    const principal = principalOf(cert.subjectaltname);
    if (!principal) throw refuse('the client certificate has no URI or DNS name');
    const row = await ctx.database.db
      .selectFrom('certificates')
      .select(['status'])
      .where('serial', '=', normalizeSerial(cert.serialNumber))
      .executeTakeFirst();
    if (row?.status === 'revoked') throw refuse('the client certificate is revoked');
    return principal;
  }

  async function handle(
    c: Context,
    fn: (body: Record<string, unknown>, principal: string) => Promise<unknown>,
  ): Promise<Response> {
    const principal = await authenticate(c);
    const text = await readBodyText(c.req.raw, MAX_BODY, undefined, nodeIncoming(c.env));
    let parsed: unknown;
    try {
      parsed = JSON.parse(text || '{}');
    } catch {
      parsed = undefined;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new KeywardError('malformed', 'the body is not a JSON object');
    // Refusals are rendered by the listener's onError; KmsError messages name keys and versions
    // only, never plaintexts or ciphertexts.
    return c.json(await fn(parsed as Record<string, unknown>, principal));
  }

  const generate = (withoutPlaintext: boolean) => async (body: Record<string, unknown>, principal: string) => {
    const r = await dataKeys.generateDataKey(
      {
        keyId: asString(body.keyId, 'keyId'),
        keySpec: (body.keySpec as 'AES_256' | 'AES_128' | undefined) ?? 'AES_256',
        encryptionContext: asContext(body.encryptionContext, 'encryptionContext'),
        withoutPlaintext,
      },
      principal,
    );
    return {
      keyId: r.keyId,
      keyVersion: r.keyVersion,
      ...(r.plaintext ? { plaintext: r.plaintext.toString('base64') } : {}),
      ciphertextBlob: r.ciphertextBlob.toString('base64'),
    };
  };

  return {
    name: 'kms',
    https(app: Hono) {
      app.post('/kms/v1/generate-data-key', (c) => handle(c, generate(false)));
      app.post('/kms/v1/generate-data-key-without-plaintext', (c) => handle(c, generate(true)));
      app.post('/kms/v1/encrypt', (c) =>
        handle(c, async (body, principal) => {
          const plaintext = b64(body.plaintext, 'plaintext');
          if (plaintext.length > MAX_PLAINTEXT)
            throw new KmsError('InvalidInput', `plaintext is larger than ${MAX_PLAINTEXT} bytes`);
          const r = await dataKeys.encrypt(
            {
              keyId: asString(body.keyId, 'keyId'),
              plaintext,
              encryptionContext: asContext(body.encryptionContext, 'encryptionContext'),
            },
            principal,
          );
          return { keyId: r.keyId, keyVersion: r.keyVersion, ciphertextBlob: r.ciphertextBlob.toString('base64') };
        }),
      );
      app.post('/kms/v1/decrypt', (c) =>
        handle(c, async (body, principal) => {
          const r = await dataKeys.decrypt(
            {
              ciphertextBlob: b64(body.ciphertextBlob, 'ciphertextBlob'),
              encryptionContext: asContext(body.encryptionContext, 'encryptionContext'),
              keyId: body.keyId === undefined ? undefined : asString(body.keyId, 'keyId'),
            },
            principal,
          );
          return { keyId: r.keyId, keyVersion: r.keyVersion, plaintext: r.plaintext.toString('base64') };
        }),
      );
      app.post('/kms/v1/re-encrypt', (c) =>
        handle(c, async (body, principal) => {
          const r = await dataKeys.reEncrypt(
            {
              ciphertextBlob: b64(body.ciphertextBlob, 'ciphertextBlob'),
              sourceEncryptionContext: asContext(body.sourceEncryptionContext, 'sourceEncryptionContext'),
              destinationKeyId: asString(body.destinationKeyId, 'destinationKeyId'),
              destinationEncryptionContext: asContext(
                body.destinationEncryptionContext,
                'destinationEncryptionContext',
              ),
            },
            principal,
          );
          return {
            keyId: r.keyId,
            keyVersion: r.keyVersion,
            sourceKeyId: r.sourceKeyId,
            sourceKeyVersion: r.sourceKeyVersion,
            ciphertextBlob: r.ciphertextBlob.toString('base64'),
          };
        }),
      );
    },
    start() {
      const holder = randomUUID();
      const opts = ctx.config.kms;
      const db = ctx.database.db;
      const janitor = startLoop({
        name: 'kms janitor',
        intervalMs: opts.janitorInterval,
        log,
        run: async () => {
          const report = await withLease(db, 'kms-janitor', holder, Math.max(opts.janitorInterval * 2, 30_000), () =>
            runJanitor(ctx.kms, db, { autoRotateDays: opts.autoRotateDays }),
          );
          if (report && (report.destroyed.keys.length || report.destroyed.versions.length || report.rotated.length))
            log.info(
              { destroyed: report.destroyed, rotated: report.rotated.map((r) => `${r.name}/v${r.version}`) },
              'kms janitor',
            );
        },
      });
      // Checked often (one cheap query) so the unsigned tail stays within checkpointInterval.
      const checkpointer = startLoop({
        name: 'audit checkpointer',
        intervalMs: Math.min(10_000, Math.max(1_000, Math.floor(opts.checkpointInterval / 6))),
        log,
        run: async () => {
          const c = await withLease(db, 'audit-checkpoint', holder, 60_000, () =>
            checkpointIfDue(ctx.kms, db, { everyEvents: opts.checkpointEveryEvents, everyMs: opts.checkpointInterval }),
          );
          if (c) {
            exportCheckpoint(opts.checkpointExport, c);
            log.debug({ seq: c.seq }, 'audit checkpoint signed');
          }
        },
      });
      return async () => {
        await Promise.all([janitor.stop(), checkpointer.stop()]);
      };
    },
  };
}
