import type { Db } from '../db/schema.ts';
import type { KeyHierarchy } from './hierarchy.ts';
import { autoRotate, type RotateResult } from './rotation.ts';
import { KeyStates } from './states.ts';

export interface JanitorOptions {
  /** Default automatic rotation period for KEKs without their own (kms.autoRotateDays). */
  autoRotateDays?: number;
}

export interface JanitorReport {
  destroyed: { keys: string[]; keks: string[]; versions: string[] };
  rotated: RotateResult[];
}

/**
 * One pass of the KMS background work. Callers run it under a database lease so one replica does
 * it at a time; every step is idempotent and decides from database time, so any replica may.
 * Audit checkpoints run on their own, shorter period (see `checkpointIfDue`).
 */
export async function runJanitor(kms: KeyHierarchy, db: Db, opts: JanitorOptions): Promise<JanitorReport> {
  const destroyed = await new KeyStates(kms, db).destroyDue();
  const rotated = await autoRotate(kms, db, opts.autoRotateDays);
  return { destroyed, rotated };
}
