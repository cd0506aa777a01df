import { createCipheriv, createDecipheriv, hkdfSync, type KeyObject, randomBytes } from 'node:crypto';

import type { Executor, ProposalState } from '../db/schema.ts';
import { KmsError } from './errors.ts';
import { CA_KEK, type KeyHierarchy } from './hierarchy.ts';

/** A trust-changing command waiting for a second administrator (`kms.dualControl`). */
export interface Proposal {
  id: string;
  command: string;
  summary: string;
  proposer: string;
  created: string;
  expires: string;
  state: ProposalState | 'expired';
  decidedBy: string | null;
  decided: string | null;
  error: string | null;
}

/** What an approval hands back to the caller, which runs the command as proposed. */
export interface Approved {
  proposal: Proposal;
  input: object;
}

// The input is sealed because some commands carry a secret (a new root's passphrase); the sealing
// key is derived from the CA KEK, so only a process that can open the hierarchy can run a proposal.
function sealingKey(kek: KeyObject): Buffer {
  return Buffer.from(hkdfSync('sha256', kek.export(), Buffer.alloc(0), 'keyward dual-control proposal v1', 32));
}

function seal(kek: KeyObject, id: string, input: object): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealingKey(kek), iv).setAAD(Buffer.from(id));
  const body = Buffer.concat([cipher.update(JSON.stringify(input)), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

function unseal(kek: KeyObject, id: string, sealed: Uint8Array): object {
  const buf = Buffer.from(sealed);
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealingKey(kek), buf.subarray(0, 12)).setAAD(Buffer.from(id));
    decipher.setAuthTag(buf.subarray(12, 28));
    return JSON.parse(Buffer.concat([decipher.update(buf.subarray(28)), decipher.final()]).toString()) as object;
  } catch {
    throw new KmsError('InvalidCiphertext', `proposal ${id} does not open: its stored input was altered`);
  }
}

interface Row {
  id: string;
  command: string;
  summary: string;
  proposer: string;
  created_at: Date;
  expires_at: Date;
  state: ProposalState;
  decided_by: string | null;
  decided_at: Date | null;
  error: string | null;
}

const iso = (d: Date | string) => new Date(d).toISOString();

function view(row: Row, now: Date): Proposal {
  const expired = row.state === 'pending' && new Date(row.expires_at) <= now;
  return {
    id: row.id,
    command: row.command,
    summary: row.summary,
    proposer: row.proposer,
    created: iso(row.created_at),
    expires: iso(row.expires_at),
    state: expired ? 'expired' : row.state,
    decidedBy: row.decided_by,
    decided: row.decided_at ? iso(row.decided_at) : null,
    error: row.error,
  };
}

const COLUMNS = [
  'id',
  'command',
  'summary',
  'proposer',
  'created_at',
  'expires_at',
  'state',
  'decided_by',
  'decided_at',
  'error',
] as const;

/**
 * Two-person control over the key hierarchy's trust-changing operations, as HSM quorum
 * authentication does it: one principal proposes, a different one approves before the window
 * closes, and each step (including a refused approval) is an audit event.
 */
export class DualControl {
  constructor(
    private readonly kms: KeyHierarchy,
    private readonly db: Executor,
    private readonly windowMs: number,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async propose(command: string, summary: string, input: object, proposer: string): Promise<Proposal> {
    const id = `p-${randomBytes(6).toString('hex')}`;
    const kek = await this.kms.primaryKek(this.db, CA_KEK);
    const now = this.now();
    const row = await this.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('kms_proposals')
        .values({
          id,
          command,
          summary,
          sealed_input: seal(kek.key, id, input),
          kek_id: kek.id,
          kek_version: kek.version,
          proposer,
          created_at: now,
          expires_at: new Date(now.getTime() + this.windowMs),
          decided_by: null,
          decided_at: null,
          error: null,
        })
        .returning(COLUMNS)
        .executeTakeFirstOrThrow();
      await this.kms.audit.append(trx, {
        principal: proposer,
        action: 'propose',
        outcome: 'success',
        context: { proposal: id, command, summary },
      });
      return inserted;
    });
    return view(row, now);
  }

  async list(all = false): Promise<Proposal[]> {
    let q = this.db.selectFrom('kms_proposals').select(COLUMNS).orderBy('created_at', 'desc');
    if (!all) q = q.where('state', '=', 'pending');
    const now = this.now();
    return (await q.limit(200).execute()).map((r) => view(r, now));
  }

  private async refuse(id: string, principal: string, code: 'AccessDenied' | 'InvalidState', detail: string) {
    await this.kms.audit.append(this.db, {
      principal,
      action: 'approve',
      outcome: 'denied',
      errorCode: code,
      context: { proposal: id },
    });
    return new KmsError(code, detail);
  }

  /** Marks the proposal approved (once, atomically) and returns its input for the caller to run. */
  async approve(id: string, approver: string): Promise<Approved> {
    const row = await this.db
      .selectFrom('kms_proposals')
      .select([...COLUMNS, 'sealed_input', 'kek_id', 'kek_version'])
      .where('id', '=', id)
      .executeTakeFirst();
    if (!row) throw new KmsError('NotFound', `no proposal ${id} (see keyward proposals list)`);
    const now = this.now();
    if (row.proposer === approver)
      throw await this.refuse(
        id,
        approver,
        'AccessDenied',
        `${approver} proposed ${id}; another administrator must approve it`,
      );
    if (row.state !== 'pending')
      throw await this.refuse(id, approver, 'InvalidState', `proposal ${id} is ${row.state}, not pending`);
    if (new Date(row.expires_at) <= now)
      throw await this.refuse(
        id,
        approver,
        'InvalidState',
        `proposal ${id} expired at ${iso(row.expires_at)}; propose it again`,
      );
    const input = unseal(await this.kms.kek(row.kek_id, row.kek_version, this.db), id, row.sealed_input);
    const approved = await this.db.transaction().execute(async (trx) => {
      // The state and expiry are checked again in the update: two approvers racing get one run.
      const updated = await trx
        .updateTable('kms_proposals')
        .set({ state: 'approved', decided_by: approver, decided_at: now })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .where('expires_at', '>', now)
        .returning(COLUMNS)
        .executeTakeFirst();
      if (updated)
        await this.kms.audit.append(trx, {
          principal: approver,
          action: 'approve',
          outcome: 'success',
          context: { proposal: id, command: row.command, proposer: row.proposer },
        });
      return updated;
    });
    if (!approved) throw await this.refuse(id, approver, 'InvalidState', `proposal ${id} was decided meanwhile`);
    return { proposal: view(approved, now), input };
  }

  async reject(id: string, principal: string): Promise<Proposal> {
    const now = this.now();
    const row = await this.db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable('kms_proposals')
        .set({ state: 'rejected', decided_by: principal, decided_at: now })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .returning(COLUMNS)
        .executeTakeFirst();
      if (updated)
        await this.kms.audit.append(trx, {
          principal,
          action: 'reject',
          outcome: 'success',
          context: { proposal: id, command: updated.command },
        });
      return updated;
    });
    if (!row) throw new KmsError('InvalidState', `no pending proposal ${id}`);
    return view(row, now);
  }

  /** Records how the approved command ended; its own audit events say what it did. */
  async finish(id: string, error?: string): Promise<Proposal> {
    const row = await this.db
      .updateTable('kms_proposals')
      .set({ state: error === undefined ? 'executed' : 'failed', error: error ?? null })
      .where('id', '=', id)
      .returning(COLUMNS)
      .executeTakeFirstOrThrow();
    return view(row, this.now());
  }
}
