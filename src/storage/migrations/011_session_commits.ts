import type { Knex } from 'knex';
import { ownedBy } from './columns.js';

// Text is stored once: in genie_dialogue. Until now a SendEvent kept each utterance four times over (the
// dialogue row, the revision's actor_input, and the event log's dialogue_appended and state_changed), and
// the log took one row per event. The log becomes one row per committed revision (`session_commits`), its
// events in their stored form: dialogue_appended without `actorText` (its element has it), state_changed
// with `actorInputSeq` in place of an `actorInput` that is the text of an element appended in the same
// revision. A revision's `actor_input` is NULL when it is the text of the element at its dialogue_length,
// and its `fields` NULL when they equal the previous revision's. Text is only dropped where the row it is
// restored from holds the same text, so a log that disagrees with its dialogue keeps its own copy.
const MOVE_EVENTS = `
INSERT INTO session_commits (session_id, revision, events)
SELECT e.session_id, e.revision, jsonb_agg(
  CASE
    WHEN e.kind = 'dialogue_appended' AND d.actor_text = e.payload->>'actorText' THEN e.payload - 'actorText'
    WHEN e.kind = 'state_changed' AND said.seq IS NOT NULL THEN (e.payload - 'actorInput') || jsonb_build_object('actorInputSeq', said.seq)
    ELSE e.payload
  END ORDER BY e.id)
FROM session_events e
LEFT JOIN genie_dialogue d
  ON e.kind = 'dialogue_appended' AND d.session_id = e.session_id AND d.seq = (e.payload->>'seq')::int
LEFT JOIN LATERAL (
  SELECT min(dd.seq) AS seq
  FROM session_events a
  JOIN genie_dialogue dd ON dd.session_id = a.session_id AND dd.seq = (a.payload->>'seq')::int
  WHERE e.kind = 'state_changed' AND a.session_id = e.session_id AND a.revision = e.revision AND a.kind = 'dialogue_appended'
    AND dd.actor_text = e.payload->>'actorInput' AND a.payload->>'actorText' = dd.actor_text
) said ON true
GROUP BY e.session_id, e.revision`;

const NULL_ACTOR_INPUT = `
UPDATE genie_session_revisions r SET actor_input = NULL
FROM genie_dialogue d
WHERE r.dialogue_length > 0 AND d.session_id = r.session_id AND d.seq = r.dialogue_length AND d.actor_text = r.actor_input`;

// Every revision's fields are compared with the previous one's as they were before this statement.
const NULL_FIELDS = `
UPDATE genie_session_revisions r SET fields = NULL
FROM (
  SELECT session_id, revision, fields = lag(fields) OVER (PARTITION BY session_id ORDER BY revision) AS same
  FROM genie_session_revisions
) p
WHERE p.same AND p.session_id = r.session_id AND p.revision = r.revision`;

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('session_commits', (t) => {
    ownedBy(t, 'session_id', 'genie_sessions');
    t.bigInteger('revision').notNullable();
    t.jsonb('events').notNullable();
    t.primary(['session_id', 'revision']);
  });
  await knex.raw(MOVE_EVENTS);
  await knex.schema.dropTable('session_events');
  await knex.raw('ALTER TABLE genie_session_revisions ALTER COLUMN actor_input DROP NOT NULL, ALTER COLUMN fields DROP NOT NULL');
  await knex.raw(NULL_ACTOR_INPUT);
  await knex.raw(NULL_FIELDS);
}

// Down leaves the data in the new shape: older code cannot read it, and it is not meant to run on data this
// version wrote.
export async function down(): Promise<void> {}
