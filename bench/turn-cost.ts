/**
 * A chat turn's cost by dialogue length (issue 14: the same at element 10,000 as at element 10). Sessions
 * are seeded through the API to each length; then, at concurrency 1 and round-robin over the lengths so
 * that a busy moment of the host falls on all of them alike, each iteration times:
 *   turn          SendEvent(user, 200 B) then SendEvent(assistant, 1 KB)
 *   read          GetSession with dialogue_page_size 10, right after the turn     (even iterations)
 *   cold read     the same after deleting the hot copy's Redis key               (even iterations)
 *   unpaged read  GetSession without a page size (every element that fits), right after the turn (odd ones)
 *   budget render FormatDialogue CHAT within 2,000 tokens (the next prompt), after the unpaged read (odd ones)
 * Every turn adds two elements, so each length has a pool of sessions sized to keep the drift within about
 * 10% of the length (one turn per session at length 10); the rows say the range the lengths covered.
 */
import { Redis } from 'ioredis';
import { type Genie, seedDialogues } from './dialogue.js';
import { compareToSmallest, scalingRow, type ScalingRow } from './scaling.js';

export interface TurnCostEnv {
  genie: Genie;
  redisUrl: string;
  redisPrefix: string;
  lengths: number[];
  /** Measured iterations per length. */
  turns: number;
  /** Sessions seeded at once. */
  seedParallel: number;
  log(msg: string): void;
}

const WARMUP_TURNS = 10;
const PAGE = 10;
/** A prompt's share of a context window: about 8 KB of the bench's text, a few elements. */
const BUDGET = 2000;

/** How many sessions of `length` keep the drift of `turns` turns (two elements each) within ~10%. */
const poolSize = (length: number, turns: number) => Math.min(turns, Math.max(1, Math.ceil((2 * turns) / Math.max(2, length / 10))));

export async function measureTurnCost(env: TurnCostEnv): Promise<ScalingRow[]> {
  const { genie, lengths, turns, log } = env;
  const pools = lengths.map((length) => ({ length, size: poolSize(length, turns) }));
  const seedLengths = [PAGE, ...pools.flatMap((p) => Array.from({ length: p.size }, () => p.length))];
  log(`turn cost: seeding ${seedLengths.length} sessions (lengths ${lengths.join(', ')}, plus one to warm up)`);
  const [warm, ...ids] = await seedDialogues(genie, seedLengths, env.seedParallel, log);
  const sessions = pools.map((p) => ids.splice(0, p.size));

  const redis = new Redis(env.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  await redis.connect();
  const dropHot = (id: string) => redis.del(`${env.redisPrefix}genie:{${id}}:hot`);
  const samples = lengths.map(() => ({ turn: [] as number[], read: [] as number[], cold: [] as number[], unpaged: [] as number[], budget: [] as number[] }));
  try {
    for (let i = 0; i < WARMUP_TURNS; i++) {
      await genie.turn(warm!);
      await genie.read(warm!, PAGE);
    }
    log(`turn cost: ${turns} turns at each length, concurrency 1`);
    for (let i = 0; i < turns; i++) {
      for (let l = 0; l < lengths.length; l++) {
        const pool = sessions[l]!;
        const id = pool[i % pool.length]!;
        const s = samples[l]!;
        s.turn.push(await genie.turn(id));
        if (i % 2 === 0) {
          s.read.push(await genie.read(id, PAGE));
          await dropHot(id);
          s.cold.push(await genie.read(id, PAGE));
        } else {
          s.unpaged.push(await genie.read(id, 0));
          s.budget.push(await genie.formatWithin(id, BUDGET));
        }
      }
    }
  } finally {
    redis.disconnect();
  }

  const rows: ScalingRow[] = [];
  const measures = [
    ['turn', 'turn'],
    ['read', `read (page ${PAGE})`],
    ['cold', `cold read (page ${PAGE})`],
    ['unpaged', 'unpaged read'],
    ['budget', `FormatDialogue within ${BUDGET.toLocaleString('en-US')} tokens`],
  ] as const;
  for (const [key, name] of measures) {
    lengths.forEach((length, l) => {
      const perSession = Math.ceil(turns / pools[l]!.size);
      rows.push(scalingRow(name, length, samples[l]![key], `${length.toLocaleString('en-US')}–${(length + 2 * perSession).toLocaleString('en-US')}`));
    });
  }
  compareToSmallest(rows, ['turn', `read (page ${PAGE})`], 1.2, (size) => size >= 1000);
  return rows;
}
