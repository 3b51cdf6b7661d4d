import type { Knex } from 'knex';
import { ownedBy, timestamps } from './columns.js';

export async function up(knex: Knex): Promise<void> {
  /** A table of a session's rows: the session's id first, then `columns`, keyed by (session_id, key). */
  const perSession = (name: string, key: string, columns: (t: Knex.CreateTableBuilder) => void) =>
    knex.schema.createTable(name, (t) => {
      ownedBy(t, 'session_id', 'genie_sessions');
      columns(t);
      t.primary(['session_id', key]);
    });
  // Registered versions are immutable: a session stored at any of them must stay upgradable.
  await knex.schema.createTable('genie_model_types', (t) => {
    ownedBy(t, 'account_id', 'accounts');
    t.text('name').notNullable();
    t.integer('schema_version').notNullable();
    t.jsonb('json_schema');
    t.jsonb('state_machine').notNullable();
    t.jsonb('upgrades').notNullable().defaultTo('[]');
    t.integer('cache_ttl_seconds').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['account_id', 'name', 'schema_version']);
  });
  // The current snapshot; `seq` gives lists a stable keyset order that clock ties cannot break.
  await knex.schema.createTable('genie_sessions', (t) => {
    t.uuid('id').primary();
    t.bigIncrements('seq', { primaryKey: false });
    ownedBy(t, 'account_id', 'accounts');
    t.text('model_type').notNullable();
    t.integer('schema_version').notNullable();
    t.text('state').notNullable();
    t.text('actor').notNullable().defaultTo('');
    t.text('actor_input').notNullable().defaultTo('');
    t.jsonb('fields').notNullable().defaultTo('{}');
    t.bigInteger('revision').notNullable();
    t.integer('dialogue_length').notNullable().defaultTo(0);
    t.uuid('forked_from_session_id');
    t.bigInteger('forked_from_revision');
    // Kept (not deleted) so the event log, which a watcher replays, still has its session row.
    t.timestamp('deleted_at', { useTz: true });
    timestamps(t, knex);
    t.unique(['seq']);
    t.index(['account_id', 'seq']);
    t.index(['account_id', 'model_type', 'seq']);
  });
  // Every revision's snapshot. The dialogue is append-only, so a revision only records its length.
  await perSession('genie_session_revisions', 'revision', (t) => {
    t.bigInteger('revision').notNullable();
    t.integer('schema_version').notNullable();
    t.text('state').notNullable();
    t.text('actor').notNullable();
    t.text('actor_input').notNullable();
    t.jsonb('fields').notNullable();
    t.integer('dialogue_length').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await perSession('genie_dialogue', 'seq', (t) => {
    t.integer('seq').notNullable();
    t.text('actor').notNullable();
    t.text('actor_text').notNullable();
    t.text('event').notNullable().defaultTo('');
    t.timestamp('timestamp', { useTz: true }).notNullable();
    t.bigInteger('revision').notNullable();
  });
  // Large write-once values live apart from the session so reading a session never loads them.
  await perSession('genie_secondary', 'key', (t) => {
    t.text('key').notNullable();
    t.binary('value').notNullable();
    t.integer('size_bytes').notNullable();
    t.bigInteger('revision').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  // Written in the same transaction as each change; WatchSession replays it after a revision.
  await knex.schema.createTable('session_events', (t) => {
    t.bigIncrements('id');
    ownedBy(t, 'session_id', 'genie_sessions');
    t.bigInteger('revision').notNullable();
    t.text('kind').notNullable();
    t.jsonb('payload').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['session_id', 'revision', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['session_events', 'genie_secondary', 'genie_dialogue', 'genie_session_revisions', 'genie_sessions', 'genie_model_types']) {
    await knex.schema.dropTableIfExists(table);
  }
}
