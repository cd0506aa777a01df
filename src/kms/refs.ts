import type { Executor } from '../db/schema.ts';
import { KmsError } from './errors.ts';

/** What a KEY argument names: a CA/audit key, a whole KEK, one KEK version, or a root of trust. */
export type KeyRef =
  | { kind: 'key'; id: string }
  | { kind: 'kek'; id: string; name: string }
  | { kind: 'kek-version'; id: string; name: string; version: number }
  | { kind: 'root'; id: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Resolves "UUID", "kek-name" or "kek-name/vN" (KEK names may also be given by id). */
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
  }
  throw new KmsError('NotFound', `no key, KEK or root named "${text}" (see keyward kms list)`);
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
