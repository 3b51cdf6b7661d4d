/**
 * A turn's cost by total data (PARLEY_BENCH_BULK=10000,1000000): the database holds N sessions of the bench
 * account and model type with 10 elements each, and a turn and a cold read on sessions picked at random
 * should cost about the same whatever N is.
 *
 * One template session is built through the API (10 chat elements: user 200 B, assistant 1 KB in turn), so
 * its rows are what parley writes, on whichever schema it runs; the bulk sessions are copies of its rows in
 * every genie table, made by the server (INSERT … SELECT over a batch of gen_random_uuid() ids) in batches
 * of one transaction each. After each N the tables are vacuumed and analyzed, as autovacuum would have done
 * in a database that grew over time. Sizes grow in order: the smallest N is seeded and measured first.
 */
import pg from 'pg';
import { Redis } from 'ioredis';
import { ASSISTANT_BYTES, type Genie, text, USER_BYTES } from './dialogue.js';
import { columnsOf, genieTables, SESSION_TABLE, sizes, vacuum } from './genie-tables.js';
import { compareToSmallest, scalingRow, type ScalingRow } from './scaling.js';

export interface BulkEnv {
  genie: Genie;
  databaseUrl: string;
  redisUrl: string;
  redisPrefix: string;
  /** Sessions in the database at each measurement, ascending. */
  counts: number[];
  /** Sessions timed at each count (one turn and one cold read each). */
  samples: number;
  /** Sessions copied per transaction. */
  batch: number;
  log(msg: string): void;
}

export interface BulkSeeding {
  sessions: number;
  seedSeconds: number;
  vacuumSeconds: number;
  /** pg_total_relation_size of the genie tables after vacuum, in MiB. */
  tablesMiB: number;
}

const ELEMENTS = 10;
const WARMUP = 5;
const PAGE = 10;
const TOPIC = 'bulk';

const list = (cols: string[], alias?: string) => cols.map((c) => (alias ? `${alias}."${c}"` : `"${c}"`)).join(', ');

/** The INSERT … SELECT per table that copies the template's rows to every id of bench_bulk_ids. */
async function copyStatements(c: pg.ClientBase, tables: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const table of tables) {
    const key = table === SESSION_TABLE ? 'id' : 'session_id';
    const { copied, serial } = await columnsOf(c, table, key);
    out.push(
      `insert into "${table}" ("${key}", ${list(copied)})
       select b.id, ${list(copied, 't')} from bench_bulk_ids b cross join "${table}" t where t."${key}" = $1
       order by b.id${serial ? `, t."${serial}"` : ''}`,
    );
  }
  return out;
}

export async function measureBulk(env: BulkEnv): Promise<{ rows: ScalingRow[]; seeding: BulkSeeding[] }> {
  const { genie, log } = env;
  const template = await genie.create({ topic: TOPIC });
  for (let i = 0; i < ELEMENTS; i++) await genie.say(template, i, text(i % 2 === 0 ? USER_BYTES : ASSISTANT_BYTES));
  const c = new pg.Client({ connectionString: env.databaseUrl, statement_timeout: 30 * 60_000 });
  await c.connect();
  const redis = new Redis(env.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  await redis.connect();
  const rows: ScalingRow[] = [];
  const seeding: BulkSeeding[] = [];
  try {
    const tables = await genieTables(c);
    const copies = await copyStatements(c, tables);
    const head = (await c.query<{ account_id: string; revision: string }>(`select account_id, revision from ${SESSION_TABLE} where id = $1`, [template])).rows[0]!;
    let have = 0;
    for (const n of env.counts) {
      const began = Date.now();
      while (have < n) {
        const k = Math.min(env.batch, n - have);
        await c.query('begin');
        try {
          await c.query('create temp table bench_bulk_ids on commit drop as select gen_random_uuid() as id from generate_series(1, $1::int)', [k]);
          for (const sql of copies) await c.query(sql, [template]);
          await c.query('commit');
        } catch (err) {
          await c.query('rollback').catch(() => {});
          throw err;
        }
        have += k;
        const s = (Date.now() - began) / 1000;
        log(`bulk: ${have.toLocaleString('en-US')}/${n.toLocaleString('en-US')} sessions (${s.toFixed(1)} s)`);
      }
      const seedSeconds = Math.round((Date.now() - began) / 100) / 10;
      const vacuumBegan = Date.now();
      await vacuum(c, tables, true);
      const vacuumSeconds = Math.round((Date.now() - vacuumBegan) / 100) / 10;
      const size = Object.values(await sizes(c, tables)).reduce((a, b) => a + b, 0);
      seeding.push({ sessions: n, seedSeconds, vacuumSeconds, tablesMiB: Math.round(size / 2 ** 20) });
      log(`bulk: ${n.toLocaleString('en-US')} sessions seeded in ${seedSeconds} s (vacuum ${vacuumSeconds} s, ${Math.round(size / 2 ** 20)} MiB); timing ${env.samples} of them`);

      // Sessions still as copied (never turned by an earlier count), picked at random.
      const picked = (
        await c.query<{ id: string }>(
          `select id from ${SESSION_TABLE} where account_id = $1 and revision = $2 and id <> $3 and fields->>'topic' = $4 order by random() limit $5`,
          [head.account_id, head.revision, template, TOPIC, env.samples + WARMUP],
        )
      ).rows.map((r) => r.id);
      const turns: number[] = [];
      const colds: number[] = [];
      for (const [i, id] of picked.entries()) {
        const turn = await genie.turn(id);
        await redis.del(`${env.redisPrefix}genie:{${id}}:hot`);
        const cold = await genie.read(id, PAGE);
        if (i < WARMUP) continue;
        turns.push(turn);
        colds.push(cold);
      }
      rows.push(scalingRow('turn', n, turns), scalingRow(`cold read (page ${PAGE})`, n, colds));
    }
  } finally {
    redis.disconnect();
    await c.end();
  }
  const largest = Math.max(...env.counts);
  rows.sort((a, b) => Number(a.measure !== 'turn') - Number(b.measure !== 'turn') || a.size - b.size);
  compareToSmallest(rows, ['turn', `cold read (page ${PAGE})`], 1.2, (size) => size === largest);
  return { rows, seeding };
}
