import type { Knex } from 'knex';
import { z } from 'zod';
import { DEFAULT_ENCODING, tokenCounter } from '../../genie/tokens.js';

// Token counts of the dialogue, kept at write time so a rendering within a token budget reads only the
// elements it needs. Each element's count is in its session's encoding (`token_encoding`, fixed when the
// session is created: its model type's, a fork's source's); the head and every revision keep the running
// total. Sessions before this migration had no encoding: they count in the default one, and their elements
// are counted here, once, so no reader ever meets an element without a count.

/** Rows counted per statement while backfilling. */
const BATCH = 1000;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE genie_model_types ADD COLUMN tokenizer_encoding text NOT NULL DEFAULT ''`);
  await knex.raw(`ALTER TABLE genie_sessions ADD COLUMN token_encoding text NOT NULL DEFAULT '${DEFAULT_ENCODING}',
    ADD COLUMN dialogue_token_count bigint NOT NULL DEFAULT 0`);
  await knex.raw('ALTER TABLE genie_session_revisions ADD COLUMN dialogue_token_count bigint NOT NULL DEFAULT 0');
  await knex.raw('ALTER TABLE genie_dialogue ADD COLUMN token_count integer NOT NULL DEFAULT 0');

  const count = await tokenCounter(DEFAULT_ENCODING);
  const rowSchema = z.array(z.object({ session_id: z.string(), seq: z.coerce.number(), actor_text: z.string() }));
  let after: { session_id: string; seq: number } | undefined;
  for (;;) {
    const q = knex('genie_dialogue').select('session_id', 'seq', 'actor_text').orderBy([{ column: 'session_id' }, { column: 'seq' }]).limit(BATCH);
    if (after) q.whereRaw('(session_id, seq) > (?::uuid, ?)', [after.session_id, after.seq]);
    const rows = rowSchema.parse(await q);
    if (rows.length === 0) break;
    const counted = rows.map((r) => ({ s: r.session_id, q: r.seq, c: count(r.actor_text) }));
    await knex.raw(
      `UPDATE genie_dialogue d SET token_count = x.c
       FROM jsonb_to_recordset(?::jsonb) AS x(s uuid, q int, c int) WHERE d.session_id = x.s AND d.seq = x.q`,
      [JSON.stringify(counted)],
    );
    const last = rows[rows.length - 1]!;
    after = { session_id: last.session_id, seq: last.seq };
  }
  // A writer that forgets the count fails instead of storing 0.
  await knex.raw('ALTER TABLE genie_dialogue ALTER COLUMN token_count DROP DEFAULT');

  // Running totals: each session's head and each revision sums its elements up to its dialogue_length.
  const CUMULATIVE = `SELECT session_id, seq, sum(token_count) OVER (PARTITION BY session_id ORDER BY seq) AS total FROM genie_dialogue`;
  await knex.raw(`UPDATE genie_sessions s SET dialogue_token_count = c.total FROM (${CUMULATIVE}) c WHERE c.session_id = s.id AND c.seq = s.dialogue_length`);
  await knex.raw(`UPDATE genie_session_revisions r SET dialogue_token_count = c.total FROM (${CUMULATIVE}) c WHERE c.session_id = r.session_id AND c.seq = r.dialogue_length`);

  // A rendering within a budget keeps every system element wherever it is: this finds them without reading
  // the rest of the dialogue.
  await knex.raw(`CREATE INDEX genie_dialogue_system ON genie_dialogue (session_id, seq) WHERE actor = 'system'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS genie_dialogue_system');
  await knex.raw('ALTER TABLE genie_dialogue DROP COLUMN token_count');
  await knex.raw('ALTER TABLE genie_session_revisions DROP COLUMN dialogue_token_count');
  await knex.raw('ALTER TABLE genie_sessions DROP COLUMN dialogue_token_count, DROP COLUMN token_encoding');
  await knex.raw('ALTER TABLE genie_model_types DROP COLUMN tokenizer_encoding');
}
