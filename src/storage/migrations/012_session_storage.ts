import type { Knex } from 'knex';

// Follows 011 (kept as it was first applied): what a turn still costs in Postgres after text is stored once.

// A logged dialogue_appended keeps only `type`, `v` and `seq` where its element holds the same actor, event
// and time: those were most of what a turn's log row held. Events whose element disagrees keep their own.
const COMPACT_LOG = `
UPDATE session_commits c SET events = (
  SELECT jsonb_agg(
    CASE WHEN x.e->>'type' = 'dialogue_appended' AND x.e->'actorText' IS NULL AND d.actor = x.e->>'actor'
        AND d.event = x.e->>'event' AND d.timestamp = (x.e->>'timestamp')::timestamptz
      THEN jsonb_build_object('type', x.e->'type', 'v', x.e->'v', 'seq', x.e->'seq')
      ELSE x.e END
    ORDER BY x.i)
  FROM jsonb_array_elements(c.events) WITH ORDINALITY AS x(e, i)
  LEFT JOIN genie_dialogue d ON x.e->>'type' = 'dialogue_appended' AND d.session_id = c.session_id AND d.seq = (x.e->>'seq')::int
)
WHERE EXISTS (
  SELECT 1 FROM jsonb_array_elements(c.events) e
  WHERE e->>'type' = 'dialogue_appended' AND e->'actorText' IS NULL AND e->'timestamp' IS NOT NULL)`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(COMPACT_LOG);
  // A revision with NULL fields has those of the latest revision before it that has any: this finds that one
  // in one step down the index, however many revisions left their fields alone (a chat's turns all do), and
  // only revisions that changed fields have an entry.
  await knex.raw('CREATE INDEX genie_session_revisions_fields ON genie_session_revisions (session_id, revision) WHERE fields IS NOT NULL');
  // Every write rewrites its session's head row, and that row carries the last actor_input (up to ~2 KB
  // inline). Its updated_at is indexed, so no update is HOT; with full pages each new version lands on a
  // fresh page before the old one is ever pruned, and the table grows by a whole row per write until a
  // VACUUM. Room kept free on each page (more than the largest inline row) lets the page be pruned and
  // the next version land beside the last.
  await knex.raw('ALTER TABLE genie_sessions SET (fillfactor = 70)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE genie_sessions RESET (fillfactor)');
  await knex.raw('DROP INDEX IF EXISTS genie_session_revisions_fields');
  // The compacted log stays compact: the reader of 011 cannot restore it, and is not meant to run on it.
}
