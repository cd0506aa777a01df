import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { openDatabase } from '../src/db/connect.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { TEMPLATE_DIR } from './support/db.ts';

// Compiles src/ to dist/ when the sources changed, so that tests which spawn `keyward` run the
// current code (bin/keyward.mjs runs dist/); and builds one migrated PGlite data directory that
// every test copies, rebuilt when migrations change.
export default async function setup(): Promise<void> {
  execFileSync(process.execPath, [join(process.cwd(), 'bin', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  if (process.env.DATABASE_URL) return;
  const dir = join(process.cwd(), 'migrations');
  const hash = createHash('sha256');
  for (const f of readdirSync(dir).sort()) hash.update(f).update(readFileSync(join(dir, f)));
  const digest = hash.digest('hex');
  const stamp = `${TEMPLATE_DIR}.sha256`;
  if (existsSync(TEMPLATE_DIR) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return;
  const building = `${TEMPLATE_DIR}.building-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true });
  const handle = await openDatabase({ dataDir: building });
  await migrateToLatest(handle.db);
  await handle.close();
  rmSync(TEMPLATE_DIR, { recursive: true, force: true });
  renameSync(join(building, 'pg'), TEMPLATE_DIR);
  rmSync(building, { recursive: true, force: true });
  writeFileSync(stamp, digest);
}
