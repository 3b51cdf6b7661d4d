/**
 * The storage's limit: the same Postgres statements and Redis calls that one RPC makes, issued directly with
 * pg and ioredis (same pool size), with no gRPC, no validation, no domain code. A ratio of an RPC to its
 * storage ceiling says how much the server adds on top of storage.
 *
 * Mirrored from src/storage/prompt-store.ts, src/storage/redis-kv.ts, src/prompt/service.ts and
 * src/genie/cache.ts as of this commit:
 *
 * Every RPC authenticates with AdminUseCases.principalOf, which answers from its in-process cache: no call
 * per RPC, so the ceiling reads the principal once, before it starts, from Postgres (api_keys by the sha256
 * of the secret). Not from parley's Redis copy: that lives PRINCIPAL_TTL_MS (10 s) after the last fill, so a
 * ceiling starting later than that after the last RPC would find it gone.
 *
 * AppendHistory (no request_id: no transaction, no fingerprint):
 *   pg    WITH bumped AS (UPDATE prompts SET revision = revision + 1, last_activity_at = now()
 *           WHERE id = $1 AND account_id = $2 RETURNING revision)
 *         INSERT INTO prompt_history (prompt_id, request, response, messages, revision)
 *           SELECT …, revision FROM bumped RETURNING *                 (KnexPromptStore.appendHistory, one statement)
 *   redis PUBLISH <prefix>prompt:{id} <event json>                     (publishPromptEvent)
 *   This is also SendEvent's ceiling (bench/run.ts): the least a durable, published append can cost, one
 *   statement and one PUBLISH, which is what a chat turn's write should come close to. (SendEvent's own
 *   statements are not mirrored: a ceiling that copies parley's statements moves with them and says nothing
 *   about whether they are the right ones.)
 *
 * OpenPrompt with the session key of a cached session (no request_id):
 *   redis GET <prefix>cache:epoch + HMGET <prefix>parley:prompt:session:{<key>} d g e  (PromptUseCases.open: no transaction,
 *                                                                       no re-put)
 *   pg    SELECT revision FROM prompts WHERE id = $1                   (PromptUseCases.withRevision: the revision
 *                                                                       moves with every log write, so it is
 *                                                                       never served from the cache)
 *
 * GetSession (revision 0) of a hot session:
 *   redis GET <prefix>cache:epoch + HMGET <prefix>genie:{id}:hot d g e  (GenieCache.get; the model type's
 *                                                                       versions come from GenieUseCases'
 *                                                                       in-process cache)
 *         or, once the copy is a versioned hash (head, revision, newest elements), GET <prefix>cache:epoch
 *         + HGETALL <prefix>genie:{id}:hot
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';
import type { BenchContext } from './lib.js';

export interface StorageOps {
  /** One operation per call; `worker` picks the row a worker owns. */
  op(worker: number): Promise<void>;
  close(): Promise<void>;
}

// Same pool size and Redis options as src/storage/db.ts and src/storage/redis-kv.ts.
const POOL_MAX = 10;

export async function storageOps(scenario: string, ctx: BenchContext): Promise<StorageOps> {
  if (!ctx.databaseUrl || !ctx.redisUrl) throw new Error('the storage ceiling needs DATABASE_URL and REDIS_URL');
  pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
  const pool = new pg.Pool({ connectionString: ctx.databaseUrl, max: POOL_MAX, min: 0 });
  const redis = new Redis(ctx.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true, enableAutoPipelining: true });
  redis.on('error', () => {});
  await redis.connect();
  const prefix = ctx.redisPrefix ?? 'parley:';
  // A cached copy is a hash (d: the copy, g: its fence generation, e: its epoch), read together with the
  // current epoch in one round trip, as RedisKv.readCached does.
  const readCopy = async (key: string): Promise<string | null> => {
    const [, [copy]] = await Promise.all([redis.get(`${prefix}cache:epoch`), redis.hmget(key, 'd', 'g', 'e')]);
    return copy ?? null;
  };
  const close = async () => {
    redis.disconnect();
    await pool.end();
  };
  // Read once, from Postgres: see the header for why not from parley's Redis copy, and why only once.
  const found = await pool
    .query<{ account_id: string }>('select account_id from api_keys where secret_hash = $1 and revoked_at is null limit 1', [
      createHash('sha256').update(ctx.apiKey).digest('hex'),
    ])
    .catch(async (err: unknown) => {
      await close();
      throw err;
    });
  if (!found.rows[0]) {
    await close();
    throw new Error('the bench API key is not in api_keys');
  }
  const principalValue = { accountId: found.rows[0].account_id };
  const principal = async () => principalValue;

  switch (scenario) {
    case 'AppendHistory': {
      const { request, response, messages } = historyPayload();
      return {
        close,
        op: async (worker) => {
          const caller = await principal();
          const promptId = ctx.promptIds[worker % ctx.promptIds.length] as string;
          const row = (
            await pool.query(
              `with bumped as (
                 update prompts set revision = revision + 1, last_activity_at = CURRENT_TIMESTAMP
                 where id = $1 and account_id = $2 returning revision
               )
               insert into prompt_history (prompt_id, request, response, messages, revision)
               select $3::uuid, $4::jsonb, $5::jsonb, $6::jsonb, revision from bumped
               returning *`,
              [promptId, caller.accountId, promptId, JSON.stringify(request), JSON.stringify(response), JSON.stringify(messages)],
            )
          ).rows[0];
          if (!row) throw new Error(`prompt ${promptId} not found`);
          await redis.publish(`${prefix}prompt:{${promptId}}`, JSON.stringify({ type: 'history', v: 1, promptId, revision: Number(row.revision), row }));
        },
      };
    }
    case 'OpenPrompt': {
      const cacheKey = `${prefix}parley:prompt:session:{${ctx.sessionKey}}`;
      return {
        close,
        op: async () => {
          const caller = await principal();
          const raw = await readCopy(cacheKey);
          if (!raw) throw new Error('prompt session is not cached');
          const row = JSON.parse(raw) as { id: string; accountId: string };
          const { rows } = await pool.query('select revision from prompts where id = $1 limit 1', [row.id]);
          if (!rows[0]) throw new Error('prompt is gone');
          if (row.accountId !== caller.accountId) throw new Error('wrong account');
        },
      };
    }
    case 'GetSession': {
      const hot = `${prefix}genie:{${ctx.hotSessionId}}:hot`;
      // Before issue 14 the copy is one JSON value (field d: session and whole dialogue); after it, a hash of
      // the head (d: the session), its revision and the newest elements (s<f>..s<n>), which one round trip
      // reads whole: here HGETALL, beside the epoch, as parley's read script does.
      const versioned = (await redis.hexists(hot, 'n')) === 1;
      return {
        close,
        op: async () => {
          const caller = await principal();
          if (versioned) {
            const [, h] = await Promise.all([redis.get(`${prefix}cache:epoch`), redis.hgetall(hot)]);
            if (!h.d) throw new Error('genie session is not hot');
            if ((JSON.parse(h.d) as { accountId: string }).accountId !== caller.accountId) throw new Error('wrong account');
            return;
          }
          const raw = await readCopy(hot);
          if (!raw) throw new Error('genie session is not hot');
          const h = JSON.parse(raw) as { session: { modelType: string; accountId: string } };
          if (h.session.accountId !== caller.accountId) throw new Error('wrong account');
        },
      };
    }
    default:
      await close();
      throw new Error(`no storage ceiling for ${scenario}`);
  }
}

/** The AppendHistory entry every worker logs (RPC and storage ceiling alike): a short two-turn exchange. */
export function historyPayload() {
  const messages = [
    { role: 'system', content: 'You are a helpful HR assistant. Answer briefly.' },
    { role: 'user', content: 'How many vacation days do I have left this year?' },
    { role: 'assistant', content: 'You have 12 vacation days left for this year, and 3 carried over from last year.' },
  ];
  const request = { model: 'gpt-4o-mini', temperature: 0.2, messages };
  const response = {
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    model: 'gpt-4o-mini',
    choices: [{ index: 0, finish_reason: 'stop', message: messages[2] }],
    usage: { prompt_tokens: 42, completion_tokens: 21, total_tokens: 63 },
  };
  return { request, response, messages };
}
