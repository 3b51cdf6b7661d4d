/**
 * run.ts's part for issue 14, at concurrency 1 from the bench process: a turn's cost by dialogue length,
 * Postgres bytes per dialogue element and, when PARLEY_BENCH_BULK names sizes, a turn's cost by the number
 * of sessions in the database.
 */
import { Genie } from './dialogue.js';
import { measureTurnCost } from './turn-cost.js';
import { measurePgBytes, pgBytesTable, type PgBytes } from './pg-bytes.js';
import { measureBulk, type BulkSeeding } from './bulk.js';
import { scalingTable, type ScalingRow } from './scaling.js';

export interface ScalingEnv {
  address: string;
  /** The run's own scratch database; undefined skips the rows that write into and measure a whole database. */
  scratchDatabaseUrl: string | undefined;
  apiKey: string;
  modelType: string;
  redisUrl: string;
  redisPrefix: string;
  settings: {
    turnLengths: number[];
    turns: number;
    seedParallel: number;
    bytesElements: number;
    bulk: number[] | undefined;
    bulkSamples: number;
    bulkBatch: number;
  };
  wants(name: string): boolean;
  log(msg: string): void;
}

export interface Scaling {
  turnCost?: ScalingRow[];
  pgBytes?: PgBytes;
  bulk?: ScalingRow[];
  bulkSeeding?: BulkSeeding[];
}

/**
 * Postgres bytes per element, first thing after seeding: a growth measured on tables with free space in them
 * (rows of aborted writes, vacuumed) would come out low, as new rows fill it; so it runs before the loads.
 */
export async function runPgBytes(env: ScalingEnv): Promise<Scaling> {
  if (!env.wants('pg-bytes') || !env.scratchDatabaseUrl) return {};
  const genie = new Genie(env.address, env.apiKey, env.modelType);
  try {
    return { pgBytes: await measurePgBytes(genie, env.scratchDatabaseUrl, env.settings.bytesElements, env.log) };
  } finally {
    genie.close();
  }
}

/** The dialogue-length rows and, with PARLEY_BENCH_BULK, the total-data ones. */
export async function runScaling(env: ScalingEnv): Promise<Scaling> {
  const { settings, wants, log, redisUrl, redisPrefix } = env;
  const scratch = env.scratchDatabaseUrl;
  const out: Scaling = {};
  const genie = new Genie(env.address, env.apiKey, env.modelType);
  try {
    if (wants('turn-cost')) {
      out.turnCost = await measureTurnCost({ genie, redisUrl, redisPrefix, lengths: settings.turnLengths, turns: settings.turns, seedParallel: settings.seedParallel, log });
    }
    if (settings.bulk && wants('bulk') && scratch) {
      const bulk = await measureBulk({ genie, databaseUrl: scratch, redisUrl, redisPrefix, counts: settings.bulk, samples: settings.bulkSamples, batch: settings.bulkBatch, log });
      out.bulk = bulk.rows;
      out.bulkSeeding = bulk.seeding;
    }
  } finally {
    genie.close();
  }
  return out;
}

/** The markdown tables of what ran. */
export function scalingText(s: Scaling): string {
  let out = '';
  if (s.turnCost) out += `turn cost by dialogue length (concurrency 1; a turn = SendEvent user 200 B + assistant 1 KB)\n\n${scalingTable(s.turnCost, 'dialogue length')}\n\n`;
  if (s.pgBytes) out += `Postgres bytes per dialogue element (${s.pgBytes.elements} elements of ${s.pgBytes.utteranceBytes} B, after VACUUM)\n\n${pgBytesTable(s.pgBytes)}\n\n`;
  if (s.bulk && s.bulkSeeding) {
    const seeded = s.bulkSeeding.map((b) => `${b.sessions.toLocaleString('en-US')} sessions: seeded in ${b.seedSeconds} s, vacuum ${b.vacuumSeconds} s, ${b.tablesMiB.toLocaleString('en-US')} MiB`).join('; ');
    out += `turn cost by total data (sessions of 10 elements; random sessions, concurrency 1)\n${seeded}\n\n${scalingTable(s.bulk, 'sessions')}\n\n`;
  }
  return out;
}
