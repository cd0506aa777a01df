import { type BackgroundLoop, type LoopLogger, startLoop } from '../core/background-loop.ts';
import { systemClock } from '../core/clock.ts';
import type { IssuerRow } from '../db/schema.ts';
import { type ExpiryWarning, expiryWarnings, inRenewalWindow, type RenewalWindow } from './issuer-expiry.ts';
import { change, type IssuerLifecycleDeps, rotateLocked, rotationParent } from './issuer-lifecycle.ts';

/** Who the audit log names for a rotation the job made. */
export const RENEWAL_PRINCIPAL = 'keyward:issuer-renewal';

/** What to do about one active issuer; `undefined` from `renewalDecision`: nothing, it is not due. */
export type RenewalDecision = { rotate: true } | { rotate: false; why: string; fix?: string };

/**
 * Whether the job may rotate an issuer that is due. Never a root (a rollover changes what relying
 * parties trust: an operator's decision); never an intermediate already replaced (the operator
 * made it active again on purpose); never when the new certificate would itself be due at once
 * (capped by a root near its end), which would rotate it again on every run.
 */
export function renewalDecision(
  row: IssuerRow,
  rows: readonly IssuerRow[],
  now: Date,
  window: RenewalWindow,
): RenewalDecision | undefined {
  if (row.state !== 'active' || !inRenewalWindow(row.not_before, row.not_after, now, window)) return undefined;
  if (row.kind === 'root') return { rotate: false, why: 'roots are never rotated automatically' };
  const successor = rows.find((r) => r.replaces === row.id);
  if (successor)
    return {
      rotate: false,
      why: `it was already replaced by ${successor.id} (${successor.state}) and made active again`,
    };
  const parent = rotationParent(rows, row);
  if (!parent) return { rotate: false, why: 'there is no active root to sign its successor' };
  const notAfter = new Date(
    Math.min(now.getTime() + (row.not_after.getTime() - row.not_before.getTime()), parent.not_after.getTime()),
  );
  if (inRenewalWindow(now, notAfter, now, window))
    return {
      rotate: false,
      why: `a successor would expire with root ${parent.id} at ${parent.not_after.toISOString()}, itself due at once`,
      fix: `keyward ca rotate-root, then keyward ca rotate-intermediate ${row.id}`,
    };
  return { rotate: true };
}

export interface RenewalRun {
  /** Rotations this call made (another replica's are not counted). */
  rotated: { old: IssuerRow; new: IssuerRow }[];
  /** Issuers still due after the run, each with why it was left (logged as warnings). */
  warnings: (ExpiryWarning & { why?: string })[];
}

export interface RenewalOptions {
  window: RenewalWindow;
  /** false: warn only (`ca.renewal.automatic`). */
  automatic: boolean;
  log: LoopLogger;
}

/**
 * One check: rotate every due intermediate (as `keyward ca rotate-intermediate` does), then log one
 * warning per issuer still due. Safe on every replica at once: each rotation decides again under
 * the issuers lock on the rows it reads there, so a replica that comes second finds the issuer
 * already `retiring` and leaves it.
 */
export async function renewIssuers(deps: IssuerLifecycleDeps, opts: RenewalOptions): Promise<RenewalRun> {
  const clock = deps.clock ?? systemClock;
  const rotated: RenewalRun['rotated'] = [];
  const failures = new Map<string, string>();
  const seen = opts.automatic ? await deps.registry.all() : [];
  for (const row of seen) {
    if (!renewalDecision(row, seen, clock.now(), opts.window)?.rotate) continue;
    try {
      const done = await change(deps, async (trx, rows) => {
        const now = clock.now();
        const current = rows.find((r) => r.id === row.id);
        const decision = current && renewalDecision(current, rows, now, opts.window);
        if (!decision?.rotate) return undefined;
        return rotateLocked(deps, trx, rows, row.id, {}, RENEWAL_PRINCIPAL);
      });
      if (!done) continue;
      rotated.push(done);
      opts.log.info(
        {
          issuer: done.old.id,
          successor: done.new.id,
          notAfter: done.new.not_after.toISOString(),
          previousNotAfter: done.old.not_after.toISOString(),
        },
        `rotated intermediate ${done.old.id} (due for renewal) to ${done.new.id}; ${done.old.id} is ${done.old.state}`,
      );
    } catch (err) {
      // It stays due and is warned about below with the reason; the other issuers still get their turn.
      failures.set(row.id, `rotating it failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  const warnings = dueWarnings(await deps.registry.all(), clock.now(), opts, failures);
  for (const w of warnings)
    opts.log.warn(
      { issuer: w.issuerId, kind: w.kind, notAfter: w.notAfter.toISOString(), daysLeft: w.daysLeft, fix: w.fix },
      `${w.message}${w.why ? ` (not rotated automatically: ${w.why})` : ''}`,
    );
  return { rotated, warnings };
}

/**
 * Every issuer due for renewal, each with why the job leaves it to an operator and the command
 * that fixes it (`failures`: issuers whose rotation this run tried and was refused, with why).
 */
export function dueWarnings(
  rows: readonly IssuerRow[],
  now: Date,
  opts: Pick<RenewalOptions, 'window' | 'automatic'>,
  failures: ReadonlyMap<string, string> = new Map(),
): RenewalRun['warnings'] {
  return expiryWarnings(rows, now, opts.window).map((w) => {
    const failed = failures.get(w.issuerId);
    const decision: RenewalDecision | undefined = failed
      ? { rotate: false, why: failed }
      : opts.automatic
        ? renewalDecision(
            rows.find((r) => r.id === w.issuerId)!,
            rows,
            now,
            opts.window,
          )
        : { rotate: false, why: 'automatic renewal is off (ca.renewal.automatic)' };
    if (!decision || decision.rotate) return w;
    const fix = decision.fix ?? w.fix;
    return { ...w, fix, why: decision.why, message: w.message.replace(w.fix, fix) };
  });
}

/** The check in `keyward serve`: at start, then every `intervalMs` (`ca.renewal.checkInterval`). */
export function startIssuerRenewal(
  deps: IssuerLifecycleDeps,
  opts: RenewalOptions & { intervalMs: number },
): BackgroundLoop {
  return startLoop({
    name: 'issuer renewal',
    intervalMs: opts.intervalMs,
    log: opts.log,
    run: async () => {
      await renewIssuers(deps, opts);
    },
  });
}
