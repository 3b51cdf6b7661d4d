import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // A stored result repeats content (a history entry, a prompt's name): `subject` names the resource it
  // belongs to, so deleting that resource deletes the results that would otherwise replay its content.
  await knex.schema.alterTable('request_ids', (t) => {
    t.text('subject');
    t.index(['subject']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('request_ids', (t) => t.dropColumn('subject'));
}
