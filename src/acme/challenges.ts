import type { Context } from 'hono';
import { sql } from 'kysely';

import { addMs } from '../core/clock.ts';
import { KeywardError } from '../core/errors.ts';
import type { AcmeChallengeType } from '../db/acme-schema.ts';
import { underLimit } from '../policy/index.ts';
import type { ValidationOutcome } from '../validation/index.ts';
import { ownedAuthz } from './authz.ts';
import { type ChallengeFacts, startableFacts } from './challenge-facts.ts';
import type { AcmeDeps } from './deps.ts';
import { randomId } from './ids.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { throwIfLimited } from './limits.ts';
import { RETRY_AFTER_SECONDS } from './orders.ts';
import { owned } from './owned.ts';
import { jsonResponse, link } from './respond.ts';
import { settleIfQuick } from './validate-at-once.ts';
import { type AuthzRow, challengeOf, type ChallengeRow, challengeView } from './views.ts';
import { attemptValidation, checkChallenge, jobLeaseMs, retryDelay } from './worker.ts';

type Found = AuthzRow & {
  /** Set when this request started the validation. */
  job_id: string | null;
  job_deadline: Date | null;
  /** False when the account is over its failed-validations limit (nothing was started). */
  under_limit: boolean;
};

/**
 * The challenge a URL names: /chall/<authorization>/<type>, or an id handed out before (see
 * migration 0018). A type the authorization does not offer is found missing with its row.
 */
async function addressed(c: Context, deps: AcmeDeps): Promise<{ authzId: string; type: AcmeChallengeType }> {
  const { id, authz, type } = c.req.param() as { id?: string; authz?: string; type?: string };
  if (authz !== undefined && type !== undefined) return { authzId: authz, type: type as AcmeChallengeType };
  const old =
    id === undefined
      ? undefined
      : await deps.db
          .selectFrom('acme_old_challenge_ids')
          .select(['authz_id', 'type'])
          .where('id', '=', id)
          .executeTakeFirst();
  if (!old) throw new KeywardError('notFound', 'No such challenge');
  return { authzId: old.authz_id, type: old.type };
}

/**
 * POST-as-GET reads a challenge; any JSON object (RFC 8555 says `{}`, unknown fields ignored) asks
 * us to validate it. One challenge per authorization is attempted; a POST to another once one is
 * under way reads it. The authorization comes with the nonce's spend, so any replica knows what
 * to check and starts at once; an outcome within the grace period is recorded in one statement
 * (validate-at-once.ts); a POST that starts nothing is answered from that row. Otherwise (a slow
 * check, a challenge URL from before migration 0018, an account over its failed-validations limit)
 * one statement reads the authorization and, when it is pending with no attempt yet and the
 * account under its failed-validations limit, records the attempt as processing with a job whose
 * lease this replica holds. The first attempt then runs here at once, so a client whose answer is
 * in place gets `valid` in this response. The job carries retries, and another replica takes it
 * over when this one dies mid-check and the lease lapses. A repeated POST, or one for a settled
 * challenge, returns the current state.
 */
export async function postChallenge(c: Context, deps: AcmeDeps): Promise<Response> {
  // A challenge URL names its authorization, read with the nonce's spend (not so an old id's).
  const named = c.req.param('authz');
  const req = await verifyRequest(c, deps, 'kid', named === undefined ? {} : { authzId: named });
  const account = requireAccount(req);
  const { authzId, type } = await addressed(c, deps);
  const now = deps.clock.now();
  const start = req.payload !== undefined;
  // What to check, when this POST may start it (only by a URL naming its authorization).
  let facts: ChallengeFacts | undefined;
  if (named !== undefined) {
    const authz = owned(req.authz?.challenge_types.includes(type) ? req.authz : undefined, account, 'challenge');
    facts = start ? startableFacts(authz, type, account.id, now) : undefined;
    // Nothing to start (a POST-as-GET, or an attempt under way or over): the row read is the answer.
    if (!facts) return challengeResponse(deps, challengeOf(authz, type)!);
    if (deps.limitedAccounts.has(account.id)) facts = undefined;
  }
  let running: Promise<ValidationOutcome> | undefined;
  if (facts) {
    running = checkChallenge(deps, { ...facts, thumbprint: account.key_thumbprint });
    // Whoever ends up waiting for it handles a failure; until then it must not go unhandled.
    running.catch(() => {});
    const settled = await settleIfQuick(deps, facts, running).catch((err: unknown) => {
      deps.log.error({ err: err instanceof Error ? err.stack : String(err), authz: authzId }, 'validation failed');
      return undefined;
    });
    if (settled) return challengeResponse(deps, settled);
  }
  const deadline = addMs(now, deps.config.validation.retryFor);
  const limit = deps.limits.rule('failedValidationsPerAccount');
  const { rows } = await sql<Found>`
    WITH found AS (
      SELECT a.*, ${underLimit(limit, account.id, now)} AS limit_ok,
        ${start}::bool AND a.status = 'pending' AND a.attempted IS NULL AND a.expires > ${now}
          AND a.account_id = ${account.id} AND ${type} = ANY (a.challenge_types) AS startable
      FROM acme_authzs a WHERE a.id = ${authzId}),
    started AS (
      UPDATE acme_authzs a SET attempted = ${type}, attempt_status = 'processing'
      FROM found WHERE a.id = found.id AND a.status = 'pending' AND a.attempted IS NULL
        AND found.startable AND found.limit_ok
      RETURNING a.id),
    job AS (
      INSERT INTO acme_jobs (id, authz_id, status, run_at, deadline, attempts, lease_holder, lease_until, created_at)
      SELECT ${randomId()}, id, 'queued', ${now}, ${deadline}, 1, ${deps.holder}, ${addMs(now, jobLeaseMs(deps))}, ${now}
      FROM started RETURNING id, deadline)
    SELECT found.*, found.limit_ok OR NOT found.startable AS under_limit,
      job.id AS job_id, job.deadline AS job_deadline
    FROM found LEFT JOIN job ON true`.execute(deps.db);
  const found = owned(rows[0]?.challenge_types.includes(type) ? rows[0] : undefined, account, 'challenge');
  if (!found.under_limit) {
    deps.limitedAccounts.add(account.id);
    throwIfLimited(
      await deps.limits.peek(deps.db, 'failedValidationsPerAccount', account.id, now),
      'Failed validations for this account',
    );
  }
  let challenge = challengeOf(found, type)!;
  if (found.job_id !== null) {
    const settled = await attemptValidation(
      deps,
      {
        jobId: found.job_id,
        authzId,
        accountId: account.id,
        kind: type,
        token: challenge.token,
        thumbprint: account.key_thumbprint,
        identifier: {
          type: found.identifier_type,
          value: found.wildcard ? `*.${found.identifier_value}` : found.identifier_value,
        },
        wildcard: found.wildcard,
        attempts: 1,
        deadline: found.job_deadline!,
      },
      running,
    ).catch((err: unknown) => {
      // The job keeps its lease and is retried when it lapses; the client sees processing.
      deps.log.error({ err: err instanceof Error ? err.stack : String(err), authz: authzId }, 'validation failed');
      return undefined;
    });
    challenge = settled ?? challengeOf(await ownedAuthz(deps.db, account, authzId), type)!;
  }
  return challengeResponse(deps, challenge);
}

function challengeResponse(deps: AcmeDeps, challenge: ChallengeRow): Response {
  const headers: Record<string, string | string[]> = { Link: link(deps.urls.authz(challenge.authz_id), 'up') };
  // A failed attempt waits for its retry (the first back-off step; at most a few seconds inside
  // validation.retryFor's 20 s): polling sooner would only show the same error.
  if (challenge.status === 'processing' && challenge.error)
    headers['Retry-After'] = String(Math.ceil(retryDelay(deps, 1) / 1000));
  else if (challenge.status === 'processing' || challenge.status === 'pending')
    headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(challengeView(deps.urls, challenge), 200, headers);
}
