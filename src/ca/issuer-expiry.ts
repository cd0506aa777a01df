import type { IssuerRow } from '../db/schema.ts';

const DAY_MS = 86_400_000;

/**
 * When an issuer is due for renewal (`ca.renewal`): less than `shareLeft` of its life, or less
 * than `timeLeftMs`, remains — whichever comes first.
 */
export interface RenewalWindow {
  shareLeft: number;
  timeLeftMs: number;
}

/** The window the issue asks for when nothing is configured: a third of the life, or 180 days. */
export const DEFAULT_RENEWAL_WINDOW: RenewalWindow = { shareLeft: 1 / 3, timeLeftMs: 180 * DAY_MS };

/** Whether a certificate valid from `notBefore` to `notAfter` is due for renewal at `now`. */
export function inRenewalWindow(notBefore: Date, notAfter: Date, now: Date, window: RenewalWindow): boolean {
  const left = notAfter.getTime() - now.getTime();
  const life = notAfter.getTime() - notBefore.getTime();
  return left < Math.max(life * window.shareLeft, window.timeLeftMs);
}

/** One issuer that signs and is near its end, with the command that fixes it. */
export interface ExpiryWarning {
  issuerId: string;
  kind: IssuerRow['kind'];
  notAfter: Date;
  daysLeft: number;
  /** What an operator runs. */
  fix: string;
  /** `<kind> <id> expires <date> (<n> days left); <fix>` — as /health and `ca issuers` show it. */
  message: string;
}

/**
 * Issuers that sign (active) and are in the renewal window. An intermediate past this point should
 * be rotated (the renewal job does it); a root, rolled over (only ever by an operator).
 */
export function expiryWarnings(rows: readonly IssuerRow[], now: Date, window: RenewalWindow): ExpiryWarning[] {
  return rows
    .filter((r) => r.state === 'active' && inRenewalWindow(r.not_before, r.not_after, now, window))
    .map((r) => {
      const daysLeft = Math.max(0, Math.floor((r.not_after.getTime() - now.getTime()) / DAY_MS));
      const fix = fixFor(r);
      return {
        issuerId: r.id,
        kind: r.kind,
        notAfter: r.not_after,
        daysLeft,
        fix,
        message: `${r.kind} ${r.id} expires ${r.not_after.toISOString()} (${daysLeft} days left); ${fix}`,
      };
    });
}

function fixFor(r: IssuerRow): string {
  if (r.kind === 'intermediate') return `keyward ca rotate-intermediate ${r.id}`;
  if (r.key_id === null) return 'its owner renews it; adopt an intermediate under the new root (ca adopt --trust)';
  return 'keyward ca rotate-root';
}

/** The window from the settings (`ca.renewal`; durations there are milliseconds). */
export function renewalWindowOf(settings: { shareLeft: number; timeLeft: number }): RenewalWindow {
  return { shareLeft: settings.shareLeft, timeLeftMs: settings.timeLeft };
}
