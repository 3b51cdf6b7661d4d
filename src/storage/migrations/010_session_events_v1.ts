import type { Knex } from 'knex';

// The session event log's payloads become the typed, versioned events of the genie domain: `type` and `v`
// inside the payload, camelCase fields. Rows written before carry the kind beside a snake_case payload;
// each kind is rewritten field by field (user `fields` are moved as they are, never rebuilt, so their own
// keys and nulls survive). Rows already in the new shape are left alone, so the step is safe to repeat.
const UP = `
UPDATE session_events SET payload = CASE kind
  WHEN 'session_created' THEN
    jsonb_build_object('type', 'session_created', 'v', 1, 'modelType', payload->'model_type',
      'schemaVersion', payload->'schema_version', 'state', payload->'state', 'fields', coalesce(payload->'fields', '{}'::jsonb))
    || CASE WHEN payload->'forked_from_session_id' IS NOT NULL
         THEN jsonb_build_object('forkedFromSessionId', payload->'forked_from_session_id', 'forkedFromRevision', payload->'forked_from_revision')
         ELSE '{}'::jsonb END
  WHEN 'dialogue_appended' THEN
    jsonb_build_object('type', 'dialogue_appended', 'v', 1, 'seq', payload->'seq', 'actor', payload->'actor',
      'actorText', payload->'actor_text', 'event', coalesce(payload->'event', '""'::jsonb), 'timestamp', payload->'timestamp')
  WHEN 'state_changed' THEN
    jsonb_build_object('type', 'state_changed', 'v', 1, 'fromState', payload->'from_state', 'toState', payload->'to_state',
      'event', payload->'event', 'actor', payload->'actor', 'actorInput', coalesce(payload->'actor_input', '""'::jsonb))
  WHEN 'fields_updated' THEN
    jsonb_build_object('type', 'fields_updated', 'v', 1, 'updateMask', coalesce(payload->'update_mask', '[]'::jsonb),
      'fields', coalesce(payload->'fields', '{}'::jsonb), 'actor', coalesce(payload->'actor', '""'::jsonb),
      'actorInput', coalesce(payload->'actor_input', '""'::jsonb))
  WHEN 'secondary_put' THEN
    jsonb_build_object('type', 'secondary_put', 'v', 1, 'key', payload->'key', 'sizeBytes', payload->'size_bytes')
  WHEN 'session_deleted' THEN jsonb_build_object('type', 'session_deleted', 'v', 1)
  ELSE payload END
WHERE payload->'type' IS NULL`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(UP);
}

// Down leaves the payloads in the new shape: older code cannot read them, and it is not meant to run on
// data this version wrote.
export async function down(): Promise<void> {}
