import { sql } from 'kysely';

import type { ParsedConfig } from '../config/schema.ts';
import { addMs } from '../core/clock.ts';
import { KeywardError, problemDocument } from '../core/errors.ts';
import { events } from '../core/events.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import type { AcmeChallengeType, AcmeProblemJson } from '../db/acme-schema.ts';
import type { ChallengeKind, ValidationConfig, ValidationOutcome, ValidationProblem } from '../validation/index.ts';
import { checkCaa, validateChallenge } from '../validation/index.ts';
import type { AcmeDeps } from './deps.ts';
import { scheduleRetry, settleInvalid, settleValid, type SettlingJob } from './settle.ts';
import type { ChallengeRow } from './views.ts';

/** A claimed job with what its check needs; the authorization's columns are null if it has gone. */
interface ClaimedJob {
  id: string;
  authz_id: string;
  attempts: number;
  deadline: Date;
  type: AcmeChallengeType | null;
  token: string | null;
  attempt_status: string | null;
  authz_status: string | null;
  identifier_type: 'dns' | 'ip' | null;
  identifier_value: string | null;
  wildcard: boolean | null;
  account_id: string | null;
  key_thumbprint: string | null;
}

/**
 * Only network trouble is worth another attempt: a refused or timed-out connection, a DNS lookup
 * that failed. A wrong answer (incorrectResponse), a 404 or a missing TXT record (unauthorized), a
 * bad TLS certificate, CAA and our own refusals are final at once, so the client sees `invalid`
 * with the reason on its next poll instead of waiting out `validation.retryFor` (certbot gives up
 * after ~30 s and never shows the reason).
 */
const TRANSIENT: ReadonlySet<ValidationProblem['type']> = new Set(['connection', 'dns']);

export function validationConfig(v: ParsedConfig['validation']): ValidationConfig {
  return {
    httpPort: v.httpPort,
    tlsAlpnPort: v.tlsAlpnPort,
    ...(v.dnsResolver !== undefined ? { dnsResolver: v.dnsResolver } : {}),
    timeoutMs: v.timeout,
    maxRedirects: v.maxRedirects,
    maxBodyBytes: v.maxBodyBytes,
  };
}

function problemJson(p: ValidationProblem): AcmeProblemJson {
  return problemDocument(new KeywardError(p.type, p.detail));
}

/**
 * Claims one due job. The lease (not a held row lock) is what keeps other replicas away while the
 * check runs, so a replica that dies mid-check only delays the job until the lease lapses.
 */
async function claim(deps: AcmeDeps, holder: string, leaseMs: number): Promise<ClaimedJob | undefined> {
  const now = deps.clock.now();
  const until = addMs(now, leaseMs);
  const res = await sql<ClaimedJob>`
    WITH claimed AS (
      UPDATE acme_jobs SET lease_holder = ${holder}, lease_until = ${until}, attempts = attempts + 1
      WHERE id = (
        SELECT id FROM acme_jobs
        WHERE status = 'queued' AND run_at <= ${now} AND (lease_until IS NULL OR lease_until < ${now})
        ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED)
      AND status = 'queued' AND (lease_until IS NULL OR lease_until < ${now})
      RETURNING id, authz_id, attempts, deadline)
    SELECT claimed.*, a.attempted AS type, a.challenge_tokens[array_position(a.challenge_types, a.attempted)] AS token,
      a.attempt_status, a.status AS authz_status, a.identifier_type, a.identifier_value, a.wildcard, a.account_id,
      acc.key_thumbprint
    FROM claimed
    LEFT JOIN acme_authzs a ON a.id = claimed.authz_id
    LEFT JOIN acme_accounts acc ON acc.id = a.account_id`.execute(deps.db);
  return res.rows[0];
}

/** Backoff between attempts: starts at min(5 s, retryFor/8), doubles, at most a minute. */
export function retryDelay(deps: AcmeDeps, attempts: number): number {
  const base = Math.min(5_000, Math.max(250, deps.config.validation.retryFor / 8));
  return Math.min(60_000, base * 2 ** Math.max(0, attempts - 1));
}

/** What one validation attempt needs: the job, the challenge and who asked for it. */
export interface ChallengeCheck {
  jobId: string;
  authzId: string;
  accountId: string;
  kind: ChallengeKind;
  token: string;
  thumbprint: string;
  /** The identifier as validated: `*.` in front for a wildcard authorization. */
  identifier: AcmeIdentifier;
  wildcard: boolean;
  attempts: number;
  deadline: Date;
}

/** How long a replica may hold a job before another may take it over (longer than one check can take). */
export function jobLeaseMs(deps: AcmeDeps): number {
  return deps.config.validation.timeout * 3 + 30_000;
}

/** What a check needs to know about the challenge and who asked for it. */
export type CheckInput = Pick<
  ChallengeCheck,
  'accountId' | 'kind' | 'token' | 'thumbprint' | 'identifier' | 'wildcard'
>;

/** The check and then CAA: network only, nothing written. */
export async function checkChallenge(deps: AcmeDeps, check: CheckInput): Promise<ValidationOutcome> {
  const { identifier: id, kind } = check;
  const outcome = await validateChallenge(
    kind,
    id,
    check.token,
    `${check.token}.${check.thumbprint}`,
    validationConfig(deps.config.validation),
    deps.resolver,
  );
  if (!outcome.ok || !deps.config.validation.caa) return outcome;
  return checkCaa(
    id,
    {
      caIdentities: deps.config.acme.caaIdentities,
      accountUri: deps.urls.account(check.accountId),
      method: kind,
      wildcard: check.wildcard,
    },
    deps.resolver,
  );
}

/** A failure worth another attempt before `deadline` (network trouble only). */
export function isTransient(outcome: ValidationOutcome, now: Date, deadline: Date): boolean {
  return !outcome.ok && TRANSIENT.has(outcome.problem.type) && now < deadline;
}

export function publishOutcome(
  check: Pick<CheckInput, 'identifier' | 'kind' | 'accountId'>,
  outcome: ValidationOutcome,
  retry: boolean,
): void {
  const base = { identifier: check.identifier.value, type: check.kind, account: check.accountId };
  if (outcome.ok) events.validation.publish({ ...base, outcome: 'valid' });
  else
    events.validation.publish({
      ...base,
      outcome: retry ? 'retry' : 'invalid',
      problem: { type: outcome.problem.type, detail: outcome.problem.detail },
    });
}

/**
 * One attempt: the check (or one already under way for this challenge, `running`), then the
 * settling statement (valid, invalid, or a retry later with the error shown). Runs in the
 * challenge POST for the first attempt and in the worker for the rest; the caller holds the job's
 * lease. Answers the challenge as settled (undefined if it had changed meanwhile, e.g. its
 * authorization was deactivated).
 */
export async function attemptValidation(
  deps: AcmeDeps,
  check: ChallengeCheck,
  running: Promise<ValidationOutcome> = checkChallenge(deps, check),
): Promise<ChallengeRow | undefined> {
  const outcome = await running;
  const job = { id: check.jobId, authzId: check.authzId, type: check.kind, accountId: check.accountId };
  const now = deps.clock.now();
  const next = new Date(Math.min(now.getTime() + retryDelay(deps, check.attempts), check.deadline.getTime()));
  const retry = isTransient(outcome, now, check.deadline);
  const settled = await settleOutcome(deps, job, check.identifier.value, outcome, retry, (problem) =>
    scheduleRetry(deps, job, problem, next, deps.holder),
  );
  publishOutcome(check, outcome, retry);
  return settled;
}

/**
 * The settling statement for an outcome: valid, invalid, or (a failure worth another attempt)
 * whatever `later` writes to have it retried; the worker is woken for the retry.
 */
export async function settleOutcome(
  deps: AcmeDeps,
  job: SettlingJob,
  identifier: string,
  outcome: ValidationOutcome,
  retry: boolean,
  later: (problem: AcmeProblemJson) => Promise<ChallengeRow | undefined>,
): Promise<ChallengeRow | undefined> {
  if (outcome.ok) return settleValid(deps, job, deps.holder);
  const problem = problemJson(outcome.problem);
  if (!retry) return settleInvalid(deps, { ...job, identifier }, problem, deps.holder);
  const settled = await later(problem);
  deps.kickWorker();
  return settled;
}

async function runJob(deps: AcmeDeps, job: ClaimedJob): Promise<void> {
  if (job.attempt_status !== 'processing' || job.authz_status !== 'pending') {
    await deps.db
      .updateTable('acme_jobs')
      .set({ status: 'done', finished_at: deps.clock.now() })
      .where('id', '=', job.id)
      .where('lease_holder', '=', deps.holder)
      .execute();
    return;
  }
  // A processing attempt has its type and token, and its authorization an account.
  const row = job as ClaimedJob & {
    [
      K in 'type' | 'token' | 'identifier_type' | 'identifier_value' | 'wildcard' | 'account_id' | 'key_thumbprint'
    ]: NonNullable<ClaimedJob[K]>;
  };
  await attemptValidation(deps, {
    jobId: row.id,
    authzId: row.authz_id,
    accountId: row.account_id,
    kind: row.type,
    token: row.token,
    thumbprint: row.key_thumbprint,
    identifier: { type: row.identifier_type, value: row.wildcard ? `*.${row.identifier_value}` : row.identifier_value },
    wildcard: row.wildcard,
    attempts: row.attempts,
    deadline: row.deadline,
  });
}

export interface ValidationWorker {
  kick(): void;
  stop(): Promise<void>;
}

/**
 * Polls for due validation jobs and runs up to `concurrency` at once. Every replica runs one; a
 * challenge POST kicks the local worker so the common case does not wait for the next poll.
 */
export function startValidationWorker(
  deps: AcmeDeps,
  opts: { concurrency?: number; pollMs?: number },
): ValidationWorker {
  const concurrency = opts.concurrency ?? 4;
  const pollMs = opts.pollMs ?? 1_000;
  const leaseMs = jobLeaseMs(deps);
  const running = new Set<Promise<void>>();
  let stopped = false;
  let wake: (() => void) | undefined;
  let kicked = false;

  // Each sleep owns its timer and waker: a stale sleep (left over from a race with a finishing job)
  // must not cancel the current one, or the loop would wait forever with jobs queued.
  const sleep = () =>
    new Promise<void>((resolve) => {
      if (kicked || stopped) {
        kicked = false;
        resolve();
        return;
      }
      const done = () => {
        clearTimeout(timer);
        if (wake === done) wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, pollMs);
      wake = done;
    });

  const loop = (async () => {
    while (!stopped) {
      if (running.size >= concurrency) {
        await Promise.race([...running, sleep()]);
        continue;
      }
      let job: ClaimedJob | undefined;
      try {
        job = await claim(deps, deps.holder, leaseMs);
      } catch (err) {
        if (!stopped) deps.log.error({ err: (err as Error).message }, 'claiming a validation job failed');
      }
      if (!job) {
        await sleep();
        continue;
      }
      const p: Promise<void> = runJob(deps, job)
        .catch((err: unknown) =>
          deps.log.error(
            { err: err instanceof Error ? err.stack : String(err), job: job.id },
            'validation job failed; it will be retried when its lease lapses',
          ),
        )
        .finally(() => running.delete(p));
      running.add(p);
    }
  })();

  return {
    kick: () => {
      kicked = true;
      wake?.();
    },
    stop: async () => {
      stopped = true;
      wake?.();
      await loop;
      await Promise.allSettled([...running]);
    },
  };
}
