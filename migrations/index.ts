import type { Migration } from 'kysely';
import * as m0001 from './0001_foundation.ts';
import * as m0002 from './0002_revocation.ts';

/** Ordered by name; a new migration is a new file listed here, never an edit to an old one. */
export const migrations: Record<string, Migration> = {
  '0001_foundation': m0001,
  '0002_revocation': m0002,
};
