import { sql } from 'kysely';

import type { Executor } from '../db/schema.ts';
import { KmsError } from './errors.ts';

/** What a KEY argument names: a CA/audit key, a whole KEK, one KEK version, or a root of trust. */
export type KeyRef =
  | { kind: 'key'; id: string }
  | { kind: 'kek'; id: string; name: string }
  | { kind: 'kek-version'; id: string; name: string; version: number }
  | { kind: 'root'; id: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Resolves "UUID", "kek-name" or "kek-name/vN" (KEK names may also be given by id), a key usage or
 * root provider that names one key (`intermediate`, `file`), or an id shortened to 8+ characters.
 */
export async function resolveKey(db: Executor, text: string): Promise<KeyRef> {
  const m = /^(.+)\/v(\d+)$/.exec(text);
  if (m) {
    const kek = await findKek(db, m[1]!);
    if (!kek) throw new KmsError('NotFound', `no KEK named "${m[1]}"`);
    const v = await db
      .selectFrom('kms_kek_versions')
      .select('version')
      .where('kek_id', '=', kek.id)
      .where('version', '=', Number(m[2]))
      .executeTakeFirst();
    if (!v) throw new KmsError('NotFound', `KEK "${kek.name}" has no version ${m[2]}`);
    return { kind: 'kek-version', id: kek.id, name: kek.name, version: v.version };
  }
  const kek = await findKek(db, text);
  if (kek) return { kind: 'kek', id: kek.id, name: kek.name };
  if (UUID.test(text)) {
    const key = await db.selectFrom('kms_keys').select('id').where('id', '=', text).executeTakeFirst();
    if (key) return { kind: 'key', id: key.id };
    const root = await db.selectFrom('kms_roots').select('id').where('id', '=', text).executeTakeFirst();
    if (root) return { kind: 'root', id: root.id };
  } else {
    // What `kms list` prints besides full ids: a key's usage or a root's provider as its name,
    // and ids shortened to their first 8 characters. Either must name exactly one.
    const byName = await candidates(db, text, PREFIX.test(text));
    if (byName.length === 1) return byName[0]!;
    if (byName.length > 1)
      throw new KmsError(
        'InvalidInput',
        `"${text}" names ${byName.length} keys (${byName.map((r) => r.id).join(', ')}); give one id`,
      );
  }
  throw new KmsError('NotFound', `no key, KEK or root named "${text}" (see keyward kms list)`);
}

/** A shortened id: at least 8 characters of a UUID's beginning. */
const PREFIX = /^[0-9a-f]{8}(-[0-9a-f]{0,4}){0,4}$/i;

/** uuid columns compared as text, for LIKE. */
const idText = sql<string>`id::text`;

async function candidates(db: Executor, text: string, prefix: boolean): Promise<KeyRef[]> {
  const like = `${text.toLowerCase()}%`;
  const [keys, roots, keks] = await Promise.all([
    db
      .selectFrom('kms_keys')
      .select('id')
      .where('state', '!=', 'Destroyed')
      .where((eb) => (prefix ? eb(idText, 'like', like) : eb('usage', '=', text as never)))
      .execute(),
    db
      .selectFrom('kms_roots')
      .select('id')
      .where((eb) =>
        prefix ? eb(idText, 'like', like) : eb.and([eb('provider', '=', text as never), eb('retired_at', 'is', null)]),
      )
      .execute(),
    prefix ? db.selectFrom('kms_keks').select(['id', 'name']).where(idText, 'like', like).execute() : [],
  ]);
  return [
    ...keys.map((k): KeyRef => ({ kind: 'key', id: k.id })),
    ...keks.map((k): KeyRef => ({ kind: 'kek', id: k.id, name: k.name })),
    ...roots.map((r): KeyRef => ({ kind: 'root', id: r.id })),
  ];
}

async function findKek(db: Executor, nameOrId: string): Promise<{ id: string; name: string } | undefined> {
  const q = db.selectFrom('kms_keks').select(['id', 'name']);
  return UUID.test(nameOrId)
    ? q.where((eb) => eb.or([eb('id', '=', nameOrId), eb('name', '=', nameOrId)])).executeTakeFirst()
    : q.where('name', '=', nameOrId).executeTakeFirst();
}

export function describeRef(ref: KeyRef): string {
  switch (ref.kind) {
    case 'key':
      return `key ${ref.id}`;
    case 'kek':
      return `KEK ${ref.name}`;
    case 'kek-version':
      return `KEK ${ref.name} version ${ref.version}`;
    case 'root':
      return `root of trust ${ref.id}`;
  }
}
