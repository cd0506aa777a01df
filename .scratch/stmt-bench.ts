import { Kysely, PostgresDialect, sql, CompiledQuery } from 'kysely';
import pg from 'pg';
import { PreparedStatementPool } from '../src/db/prepared-statements.ts';
const url = 'postgres://postgres@127.0.0.1:5433/bench';
const pool = new pg.Pool({ connectionString: url, max: 1 });
const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new PreparedStatementPool(pool) }) });
const N = 4000;
const now = new Date();
async function time(label: string, f: () => Promise<unknown>) {
  for (let i = 0; i < 300; i++) await f();
  const c0 = process.cpuUsage(); const t0 = performance.now();
  for (let i = 0; i < N; i++) await f();
  const c = process.cpuUsage(c0); const t = performance.now() - t0;
  console.log(label.padEnd(40), `cpu ${(((c.user + c.system) / N)).toFixed(1)} µs/stmt  wall ${((t * 1000) / N).toFixed(1)} µs`);
}
const text = 'SELECT $1::text AS a, $2::timestamptz AS b, $3::int AS c';
const compiled = CompiledQuery.raw(text, ['x', now, 3]);
await time('kysely sql`` template', () => sql`SELECT ${'x'}::text AS a, ${now}::timestamptz AS b, ${3}::int AS c`.execute(db));
await time('kysely executeQuery(compiled)', () => db.executeQuery(compiled));
const client = await pool.connect();
await time('pg client.query({name,text,values})', () => client.query({ name: 'q1', text, values: ['x', now, 3] }));
await time('pg client.query(text, values) unnamed', () => client.query(text, ['x', now, 3]));
await time('pg Query w/ name set after', () => new Promise((res, rej) => { const q = new (pg as any).Query(text, ['x', now.toISOString(), 3], (e: any, r: any) => (e ? rej(e) : res(r))); q.name = 'q2'; client.query(q); }));
// wide row
const wide = 'SELECT * FROM pg_class WHERE oid = $1::oid';
await time('pg named, wide row (pg_class *)', () => client.query({ name: 'q3', text: wide, values: [1259] }));
await time('pg named, rowMode array wide', () => client.query({ name: 'q3', text: wide, values: [1259], rowMode: 'array' }));
client.release();
await time('kysely sql`` template again', () => sql`SELECT ${'x'}::text AS a, ${now}::timestamptz AS b, ${3}::int AS c`.execute(db));
await time('kysely executeQuery(compiled) again', () => db.executeQuery(compiled));
await db.destroy();
