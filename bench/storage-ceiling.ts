/**
 * The storage's limit: the same Postgres statements (same transaction shape, same pool size) and the same
 * Redis calls that one RPC makes, issued directly with pg and ioredis, with no gRPC, no validation, no
 * domain code. A ratio of an RPC to its storage ceiling says how much the server adds on top of storage.
 *
 * Mirrored from src/storage/*-store.ts, src/storage/unit-of-work.ts, src/storage/redis-kv.ts, src/prompt/service.ts,
 * src/genie/service.ts, src/genie/cache.ts and src/admin/cache.ts (principalOf) as of this commit:
 *
 * Every RPC authenticates with AdminUseCases.principalOf, which answers from its in-process cache (filled
 * once from Redis GET <prefix>apikey:<sha256>): no call per RPC, so the ceiling reads it once too.
 *
 * AppendHistory (no request_id: no transaction, no fingerprint):
 *   pg    WITH bumped AS (UPDATE prompts SET revision = revision + 1, last_activity_at = now()
 *           WHERE id = $1 AND account_id = $2 RETURNING revision)
 *         INSERT INTO prompt_history (prompt_id, request, response, messages, revision)
 *           SELECT …, revision FROM bumped RETURNING *                 (KnexPromptStore.appendHistory, one statement)
 *   redis PUBLISH <prefix>prompt:{id} <event json>                     (publishPromptEvent)
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
 *
 * SendEvent (no expected revision):
 *   pg    BEGIN
 *         SELECT * FROM genie_sessions WHERE id AND account_id AND deleted_at IS NULL LIMIT 1 FOR UPDATE
 *         SELECT * FROM genie_model_types WHERE account_id AND name ORDER BY schema_version
 *         UPDATE genie_sessions SET … WHERE id RETURNING *
 *         INSERT INTO genie_session_revisions …
 *         INSERT INTO genie_dialogue …
 *         INSERT INTO session_events … (2 rows: state_changed, dialogue_appended)
 *         COMMIT
 *   redis EVALSHA fence <prefix>genie:{id}:hot (HINCRBY g, HDEL d, PEXPIRE)
 *   redis PUBLISH <prefix>genie:{id} {type: commit, revision, events: [state_changed, dialogue_appended]}
 *         (GenieCache.publish: one message per revision)
 *   pg    SELECT * FROM genie_dialogue WHERE session_id AND seq <= n ORDER BY seq   (the response's dialogue)
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

export async function storageOps(scenario: string, ctx: BenchContext, sessions: string[]): Promise<StorageOps> {
  if (!ctx.databaseUrl || !ctx.redisUrl) throw new Error('the storage ceiling needs DATABASE_URL and REDIS_URL');
  pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
  const pool = new pg.Pool({ connectionString: ctx.databaseUrl, max: POOL_MAX, min: 0 });
  const redis = new Redis(ctx.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true, enableAutoPipelining: true });
  redis.on('error', () => {});
  await redis.connect();
  const prefix = ctx.redisPrefix ?? 'parley:';
  const apiKeyKey = `${prefix}apikey:${createHash('sha256').update(ctx.apiKey).digest('hex')}`;
  // A cached copy is a hash (d: the copy, g: its fence generation, e: its epoch), read together with the
  // current epoch in one round trip, as RedisKv.readCached does; a fence is one script.
  const readCopy = async (key: string): Promise<string | null> => {
    const [, [copy]] = await Promise.all([redis.get(`${prefix}cache:epoch`), redis.hmget(key, 'd', 'g', 'e')]);
    return copy ?? null;
  };
  const fence = (key: string) => redis.eval("redis.call('HINCRBY', KEYS[1], 'g', 1) redis.call('HDEL', KEYS[1], 'd') redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1", 1, key, 600_000);
  const close = async () => {
    redis.disconnect();
    await pool.end();
  };
  const tx = async <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const v = await fn(c);
      await c.query('COMMIT');
      return v;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  };
  // The principal is cached in Redis (second level) by the seed's calls; fail loudly if it is not. Per call,
  // parley answers it from its in-process cache, so the ceiling reads it once here.
  const cachedPrincipal = await readCopy(apiKeyKey);
  if (!cachedPrincipal) {
    await close();
    throw new Error('api key principal is not cached in Redis');
  }
  const principalValue = JSON.parse(cachedPrincipal) as { accountId: string };
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
      return {
        close,
        op: async () => {
          const caller = await principal();
          const raw = await readCopy(hot);
          if (!raw) throw new Error('genie session is not hot');
          const h = JSON.parse(raw) as { session: { modelType: string; accountId: string } };
          if (h.session.accountId !== caller.accountId) throw new Error('wrong account');
        },
      };
    }
    case 'SendEvent': {
      return {
        close,
        op: async (worker) => {
          const caller = await principal();
          const id = sessions[worker % sessions.length] as string;
          const { session, ...events } = await tx(async (c) => {
            const cur = (
              await c.query('select * from "genie_sessions" where "id" = $1 and "account_id" = $2 and "deleted_at" is null limit 1 for update', [id, caller.accountId])
            ).rows[0];
            if (!cur) throw new Error(`session ${id} not found`);
            await c.query('select * from "genie_model_types" where "account_id" = $1 and "name" = $2 order by "schema_version" asc', [caller.accountId, cur.model_type]);
            const revision = Number(cur.revision) + 1;
            const now = new Date();
            const seq = cur.dialogue_length + 1;
            const s = (
              await c.query(
                'update "genie_sessions" set "schema_version" = $1, "state" = $2, "actor" = $3, "actor_input" = $4, "fields" = $5, "revision" = $6, "dialogue_length" = $7, "updated_at" = $8, "deleted_at" = $9 where "id" = $10 returning *',
                [cur.schema_version, cur.state, 'user', 'hello', JSON.stringify(cur.fields), revision, seq, now, null, id],
              )
            ).rows[0];
            await c.query(
              'insert into "genie_session_revisions" ("actor", "actor_input", "created_at", "dialogue_length", "fields", "revision", "schema_version", "session_id", "state") values ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
              ['user', 'hello', now, seq, JSON.stringify(s.fields), revision, s.schema_version, id, s.state],
            );
            await c.query(
              'insert into "genie_dialogue" ("actor", "actor_text", "event", "revision", "seq", "session_id", "timestamp") values ($1, $2, $3, $4, $5, $6, $7)',
              ['user', 'hello', ctx.event, revision, seq, id, now],
            );
            const evs = [
              { type: 'state_changed', v: 1, fromState: cur.state, toState: cur.state, event: ctx.event, actor: 'user', actorInput: 'hello' },
              { type: 'dialogue_appended', v: 1, seq, actor: 'user', actorText: 'hello', event: ctx.event, timestamp: now.toISOString() },
            ];
            await c.query('insert into "session_events" ("kind", "payload", "revision", "session_id") values ($1, $2, $3, $4), ($5, $6, $7, $8)', [
              evs[0]!.type,
              JSON.stringify(evs[0]),
              revision,
              id,
              evs[1]!.type,
              JSON.stringify(evs[1]),
              revision,
              id,
            ]);
            return { session: s, events: evs, revision };
          });
          await fence(`${prefix}genie:{${id}}:hot`);
          await redis.publish(`${prefix}genie:{${id}}`, JSON.stringify({ type: 'commit', v: 1, revision: events.revision, events: events.events }));
          await pool.query('select * from "genie_dialogue" where "session_id" = $1 and "seq" <= $2 order by "seq" asc', [id, session.dialogue_length]);
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
