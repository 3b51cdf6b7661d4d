import test from 'ava';
import { randomUUID } from 'node:crypto';
import { openDb } from '../../src/storage/db.js';
import { KnexSessionEventLog } from '../../src/storage/genie-event-log.js';

/** Applies migrations one at a time until `name` would be next. */
async function migrateUpTo(db: ReturnType<typeof openDb>, name: string): Promise<void> {
  for (;;) {
    const [, pending] = (await db.migrate.list()) as [unknown, Array<{ file: string } | string>];
    const next = pending.map((p) => (typeof p === 'string' ? p : p.file))[0];
    if (!next || next.startsWith(name)) return;
    await db.migrate.up();
  }
}

// Migration 010 on a database whose event log was written before events were typed: every kind comes back
// through the domain's schema, user fields as they were (their own keys and nulls included).
test('migration 010 rewrites the session event log into typed, versioned events', async (t) => {
  const db = openDb({ databaseUrl: undefined, dataDir: 'memory' });
  try {
    await migrateUpTo(db, '010');
    const account = randomUUID();
    const session = randomUUID();
    const source = randomUUID();
    await db('accounts').insert({ id: account, account_number: '1111-2222-3333' });
    for (const id of [source, session]) {
      await db('genie_sessions').insert({ id, account_id: account, model_type: 'Flow', schema_version: 1, state: 'intro', revision: 5 });
    }
    const at = '2026-11-01T10:00:00.000Z';
    const old = [
      [1, 'session_created', { model_type: 'Flow', schema_version: 1, state: 'intro', fields: { topic: null, due_date: 'x' }, forked_from_session_id: source, forked_from_revision: 3 }],
      [2, 'state_changed', { from_state: 'intro', to_state: 'ai', event: 'user_input', actor: 'user', actor_input: 'hi' }],
      [2, 'dialogue_appended', { seq: 1, actor: 'user', actor_text: 'hi', event: 'user_input', timestamp: at }],
      [3, 'fields_updated', { update_mask: ['fields'], fields: { topic: 'tea' }, actor: '', actor_input: '' }],
      [4, 'secondary_put', { key: 'doc', size_bytes: 12 }],
      [5, 'session_deleted', {}],
    ] as const;
    await db('session_events').insert(old.map(([revision, kind, payload]) => ({ session_id: session, revision, kind, payload: JSON.stringify(payload) })));

    await db.migrate.latest();
    await db.migrate.latest(); // nothing pending: a second run changes nothing

    const commits = await new KnexSessionEventLog(db).commitsAfter(session, 0, 10);
    t.deepEqual(
      commits.map((c) => [c.revision, c.events]),
      [
        [1, [{ type: 'session_created', v: 1, modelType: 'Flow', schemaVersion: 1, state: 'intro', fields: { topic: null, due_date: 'x' }, forkedFromSessionId: source, forkedFromRevision: 3 }]],
        [
          2,
          [
            { type: 'state_changed', v: 1, fromState: 'intro', toState: 'ai', event: 'user_input', actor: 'user', actorInput: 'hi' },
            { type: 'dialogue_appended', v: 1, seq: 1, actor: 'user', actorText: 'hi', event: 'user_input', timestamp: new Date(at) },
          ],
        ],
        [3, [{ type: 'fields_updated', v: 1, updateMask: ['fields'], fields: { topic: 'tea' }, actor: '', actorInput: '' }]],
        [4, [{ type: 'secondary_put', v: 1, key: 'doc', sizeBytes: 12 }]],
        [5, [{ type: 'session_deleted', v: 1 }]],
      ],
    );
  } finally {
    await db.destroy();
  }
});
