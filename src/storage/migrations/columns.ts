import type { Knex } from 'knex';

// Column sets many tables share. Migrations are history: a change here changes what every migration that
// uses it creates, so these only ever get new helpers, never edits.

/** `created_at` and `updated_at`, both set to now by default. */
export function timestamps(t: Knex.CreateTableBuilder, knex: Knex, columns: readonly string[] = ['created_at', 'updated_at']): void {
  for (const c of columns) t.timestamp(c, { useTz: true }).notNullable().defaultTo(knex.fn.now());
}

/** A required reference to `table.id` that goes when that row goes. */
export function ownedBy(t: Knex.CreateTableBuilder, column: string, table: string): void {
  t.uuid(column).notNullable().references(`${table}.id`).onDelete('CASCADE');
}

/**
 * A name an account owns (user profiles, LLM clients, plugins): unique within the account, with a text beside
 * it (`description`, or a profile's `email`).
 */
export function namedByAccount(t: Knex.CreateTableBuilder, knex: Knex, name = 'name', text = 'description'): void {
  t.uuid('id').primary();
  ownedBy(t, 'account_id', 'accounts');
  t.text(name).notNullable();
  t.text(text).notNullable().defaultTo('');
  timestamps(t, knex);
  t.unique(['account_id', name]);
}
