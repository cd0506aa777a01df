import type { Context } from 'hono';
import { sql } from 'kysely';

import { addMs } from './clock.ts';
import type { AcmeDeps } from './deps.ts';
import { randomId } from './ids.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { throwIfLimited } from './limits.ts';
import { RETRY_AFTER_SECONDS } from './orders.ts';
import { notFound, unauthorized } from './problem.ts';
import { jsonResponse, link } from './respond.ts';
import { authzStatus, type ChallengeRow, challengeView } from './views.ts';

/**
 * POST-as-GET reads a challenge; any JSON object (RFC 8555 says `{}`, unknown fields ignored) asks
 * us to validate it. Validation runs as a database job, so the answer comes at once: `processing`.
 * A repeated POST, or one for a settled challenge, just returns the current state (interop 79).
 */
export async function postChallenge(c: Context, deps: AcmeDeps): Promise<Response> {
  const req = await verifyRequest(c, deps, 'kid');
  const account = requireAccount(req);
  const id = c.req.param('id')!;
  const found = await deps.db
    .selectFrom('acme_challenges as ch')
    .innerJoin('acme_authzs as a', 'a.id', 'ch.authz_id')
    .selectAll('ch')
    .select(['a.account_id', 'a.status as authz_status', 'a.expires as authz_expires'])
    .where('ch.id', '=', id)
    .executeTakeFirst();
  if (!found) throw notFound('challenge');
  if (found.account_id !== account.id) throw unauthorized('This challenge belongs to another account');
  let { account_id: _a, authz_status, authz_expires, ...challenge } = found;
  const now = deps.clock.now();
  const authzLive =
    authzStatus({ status: authz_status, expires: authz_expires } as Parameters<typeof authzStatus>[0], now) ===
    'pending';
  if (req.payload && challenge.status === 'pending' && authzLive) {
    throwIfLimited(
      await deps.limits.peek(deps.db, 'failedValidationsPerAccount', account.id, now),
      'Failed validations for this account',
    );
    // One statement, so the challenge never turns processing without a job to settle it.
    const { rows } = await sql<ChallengeRow>`
      WITH started AS (
        UPDATE acme_challenges SET status = 'processing' WHERE id = ${challenge.id} AND status = 'pending' RETURNING *),
      job AS (
        INSERT INTO acme_jobs (id, challenge_id, status, run_at, deadline, created_at)
        SELECT ${randomId()}, id, 'queued', ${now}, ${addMs(now, deps.ctx.config.validation.retryFor)}, ${now} FROM started)
      SELECT * FROM started`.execute(deps.db);
    const started = rows[0];
    if (started) {
      challenge = started;
      deps.kickWorker();
    } else {
      challenge = await deps.db
        .selectFrom('acme_challenges')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
    }
  }
  const headers: Record<string, string | string[]> = { Link: link(deps.urls.authz(challenge.authz_id), 'up') };
  if (challenge.status === 'processing' || challenge.status === 'pending') headers['Retry-After'] = RETRY_AFTER_SECONDS;
  return jsonResponse(challengeView(deps.urls, challenge), 200, headers);
}
