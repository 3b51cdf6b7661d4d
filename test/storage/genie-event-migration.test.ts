import test from 'ava';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { sessionEventSchema, type SessionCommit } from '../../src/genie/events.js';
import type { DialogueRow, StoredSession } from '../../src/genie/store.js';
import { openDb, type Db } from '../../src/storage/db.js';
import { KnexSessionEventLog } from '../../src/storage/genie-event-log.js';
import { KnexSessionStore } from '../../src/storage/genie-store.js';
import { testWhen } from '../helpers/backends.js';
import { dbBackends } from '../helpers/db-backends.js';
import { tokenCounter } from '../../src/genie/tokens.js';

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

const backends = dbBackends;

const at = (minute: number) => new Date(Date.UTC(2026, 10, 1, 10, minute)).toISOString();
/** Utterances are marked so a search of the stored rows finds any copy of one. */
const said = (n: number) => `utterance-${n} ${'x'.repeat(300)} é ✓`;

/**
 * Old-shape rows of a session, as the code before migration 011 wrote them: every revision's snapshot whole,
 * one session_events row per event (v1 payloads after 010), the dialogue once in genie_dialogue.
 */
interface OldRevision {
  state: string;
  actor: string;
  actorInput: string;
  fields: Record<string, unknown>;
  appended?: Array<{ actor: string; text: string; event: string }>;
  events: Array<Record<string, unknown>>;
}

async function writeOldSession(db: Db, account: string, id: string, revisions: OldRevision[], opts: { fork?: { from: string; upTo: number } } = {}): Promise<void> {
  let length = 0;
  const last = revisions.length;
  const head = revisions[last - 1]!;
  await db('genie_sessions').insert({
    id,
    account_id: account,
    model_type: 'qa',
    schema_version: 1,
    state: head.state,
    actor: head.actor,
    actor_input: head.actorInput,
    fields: JSON.stringify(head.fields),
    revision: last,
    dialogue_length: revisions.reduce((n, r) => n + (r.appended?.length ?? 0), opts.fork?.upTo ?? 0),
    created_at: at(0),
    updated_at: at(last),
  });
  if (opts.fork) {
    await db.raw(
      `insert into genie_dialogue (session_id, seq, actor, actor_text, event, timestamp, revision)
       select ?, seq, actor, actor_text, event, timestamp, 1 from genie_dialogue where session_id = ? and seq <= ?`,
      [id, opts.fork.from, opts.fork.upTo],
    );
    length = opts.fork.upTo;
  }
  for (const [i, r] of revisions.entries()) {
    const revision = i + 1;
    for (const d of r.appended ?? []) {
      length++;
      await db('genie_dialogue').insert({ session_id: id, seq: length, actor: d.actor, actor_text: d.text, event: d.event, timestamp: at(revision), revision });
    }
    await db('genie_session_revisions').insert({
      session_id: id,
      revision,
      schema_version: 1,
      state: r.state,
      actor: r.actor,
      actor_input: r.actorInput,
      fields: JSON.stringify(r.fields),
      dialogue_length: length,
      created_at: at(revision),
    });
    for (const e of r.events) await db('session_events').insert({ session_id: id, revision, kind: e.type, payload: JSON.stringify(e) });
  }
}

const appendedEvent = (seq: number, actor: string, text: string, event: string, revision: number) => ({ type: 'dialogue_appended', v: 1, seq, actor, actorText: text, event, timestamp: at(revision) });
const stateChangedEvent = (fromState: string, toState: string, event: string, actor: string, actorInput: string) => ({ type: 'state_changed', v: 1, fromState, toState, event, actor, actorInput });

const revisionColumns = z.object({
  revision: z.coerce.number(),
  schema_version: z.coerce.number(),
  state: z.string(),
  actor: z.string(),
  actor_input: z.string(),
  fields: z.record(z.string(), z.unknown()),
  dialogue_length: z.coerce.number(),
  created_at: z.coerce.date(),
});
const dialogueColumns = z.object({ seq: z.coerce.number(), actor: z.string(), actor_text: z.string(), event: z.string(), timestamp: z.coerce.date(), revision: z.coerce.number() });

/** What the code before migration 011 answered for a session: its whole log, and the session at each revision. */
async function oldAnswers(db: Db, id: string): Promise<{ commits: SessionCommit[]; at: Map<number, { session: StoredSession; dialogue: DialogueRow[] }> }> {
  const commits: SessionCommit[] = [];
  for (const row of await db('session_events').where({ session_id: id }).orderBy([{ column: 'revision' }, { column: 'id' }])) {
    const revision = Number(row.revision);
    let last = commits[commits.length - 1];
    if (!last || last.revision !== revision) commits.push((last = { revision, events: [] }));
    last.events.push(sessionEventSchema.parse(typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload));
  }
  const head = await db('genie_sessions').where({ id }).first();
  // Migration 013 counts every element in the default encoding.
  const count = await tokenCounter('o200k_base');
  const dialogue = (await db('genie_dialogue').where({ session_id: id }).orderBy('seq')).map((r) => {
    const d = dialogueColumns.parse(r);
    return { seq: d.seq, actor: d.actor, actorText: d.actor_text, event: d.event, timestamp: d.timestamp, revision: d.revision, tokenCount: count(d.actor_text) } as DialogueRow;
  });
  const sessions = new Map<number, { session: StoredSession; dialogue: DialogueRow[] }>();
  for (const row of await db('genie_session_revisions').where({ session_id: id })) {
    const r = revisionColumns.parse(row);
    const session: StoredSession = {
      id,
      accountId: head.account_id,
      modelType: head.model_type,
      schemaVersion: r.schema_version,
      state: r.state,
      actor: r.actor as StoredSession['actor'],
      actorInput: r.actor_input,
      fields: r.fields,
      revision: r.revision,
      dialogueLength: r.dialogue_length,
      dialogueTokenCount: dialogue.filter((d) => d.seq <= r.dialogue_length).reduce((n, d) => n + d.tokenCount, 0),
      tokenEncoding: 'o200k_base',
      forkedFromSessionId: head.forked_from_session_id ?? undefined,
      forkedFromRevision: head.forked_from_revision === null ? undefined : Number(head.forked_from_revision),
      expireTime: head.expire_time ?? undefined,
      endUserId: head.end_user_id ?? undefined,
      labels: {},
      createdAt: new Date(head.created_at),
      updatedAt: r.created_at,
    };
    sessions.set(r.revision, { session, dialogue: dialogue.filter((d) => d.seq <= r.dialogue_length) });
  }
  return { commits, at: sessions };
}

for (const backend of backends) {
  const test = testWhen(backend.enabled, 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL to cover a real Postgres');

  // Migration 011 on a database the code before it wrote: the log moves into one row per revision and every
  // copy of an utterance goes, and yet the log and every revision read back exactly as they did before.
  test(`${backend.name}: migration 011 stores each text once and reads back the same log and revisions`, async (t) => {
    const { db, drop } = await backend.open();
    try {
      await migrateUpTo(db, '011');
      const account = randomUUID();
      const [chat, forked, deleted] = [randomUUID(), randomUUID(), randomUUID()];
      await db('accounts').insert({ id: account, account_number: '1111-2222-3333' });
      const fields = { topic: null, profile: { age: 30 } };
      await writeOldSession(db, account, chat, [
        { state: 'asking', actor: '', actorInput: '', fields, events: [{ type: 'session_created', v: 1, modelType: 'qa', schemaVersion: 1, state: 'asking', fields }] },
        // SendEvent: the utterance is the element, the revision's actor_input and both events' text.
        {
          state: 'answering',
          actor: 'user',
          actorInput: said(1),
          fields,
          appended: [{ actor: 'user', text: said(1), event: 'user_input' }],
          events: [stateChangedEvent('asking', 'answering', 'user_input', 'user', said(1)), appendedEvent(1, 'user', said(1), 'user_input', 2)],
        },
        // UpdateSession of the fields only: actor_input still the last element's text.
        { state: 'answering', actor: 'user', actorInput: said(1), fields: { topic: 'tea' }, events: [{ type: 'fields_updated', v: 1, updateMask: ['fields.topic'], fields: { topic: 'tea' }, actor: 'user', actorInput: said(1) }] },
        // AppendDialogue: the speaker of the note is the session's actor.
        // (Its logged time is not quite the element's: the log keeps its own.)
        {
          state: 'answering',
          actor: 'system',
          actorInput: said(2),
          fields: { topic: 'tea' },
          appended: [{ actor: 'system', text: said(2), event: '' }],
          events: [{ ...appendedEvent(2, 'system', said(2), '', 4), timestamp: '2026-11-01T10:04:00.001Z' }],
        },
        { state: 'answering', actor: 'system', actorInput: said(2), fields: { topic: 'tea' }, events: [{ type: 'secondary_put', v: 1, key: 'doc', sizeBytes: 3 }] },
        // A typed actor_input that is no element's text stays in its revision.
        { state: 'answering', actor: 'user', actorInput: 'typed by hand', fields: { topic: 'tea' }, events: [{ type: 'fields_updated', v: 1, updateMask: ['actor_input'], fields: { topic: 'tea' }, actor: 'user', actorInput: 'typed by hand' }] },
        // Two elements in one revision, and a transition whose input is the first of them.
        {
          state: 'asking',
          actor: 'assistant',
          actorInput: said(4),
          fields: { topic: 'tea', turns: 1 },
          appended: [
            { actor: 'assistant', text: said(3), event: 'ai_response' },
            { actor: 'assistant', text: said(4), event: 'ai_response' },
          ],
          events: [stateChangedEvent('answering', 'asking', 'ai_response', 'assistant', said(3)), appendedEvent(3, 'assistant', said(3), 'ai_response', 7), appendedEvent(4, 'assistant', said(4), 'ai_response', 7)],
        },
        // A log that disagrees with its dialogue keeps its own text.
        {
          state: 'answering',
          actor: 'user',
          actorInput: 'kept-input',
          fields: { topic: 'tea', turns: 1 },
          appended: [{ actor: 'user', text: said(5), event: 'user_input' }],
          events: [stateChangedEvent('asking', 'answering', 'user_input', 'user', 'kept-input'), appendedEvent(5, 'user', 'kept-text', 'user_input', 8)],
        },
      ]);
      // A fork of the chat at revision 4, two elements, its revision 1 says the fork's last element.
      const forkFields = { topic: 'tea' };
      await writeOldSession(
        db,
        account,
        forked,
        [{ state: 'answering', actor: 'system', actorInput: said(2), fields: forkFields, events: [{ type: 'session_created', v: 1, modelType: 'qa', schemaVersion: 1, state: 'answering', fields: forkFields, forkedFromSessionId: chat, forkedFromRevision: 4 }] }],
        { fork: { from: chat, upTo: 2 } },
      );
      await db('genie_sessions').where({ id: forked }).update({ forked_from_session_id: chat, forked_from_revision: 4 });
      // A tombstone: its log keeps only the deletion.
      await db('genie_sessions').insert({ id: deleted, account_id: account, model_type: 'qa', schema_version: 1, state: '', revision: 3, deleted_at: at(3) });
      await db('session_events').insert({ session_id: deleted, revision: 3, kind: 'session_deleted', payload: JSON.stringify({ type: 'session_deleted', v: 1 }) });

      const before = new Map<string, Awaited<ReturnType<typeof oldAnswers>>>();
      for (const id of [chat, forked, deleted]) before.set(id, await oldAnswers(db, id));
      t.is(before.get(chat)!.commits.length, 8);

      await db.migrate.latest();
      await db.migrate.latest(); // nothing pending: a second run changes nothing

      const log = new KnexSessionEventLog(db);
      const store = new KnexSessionStore(db);
      for (const [id, old] of before) {
        t.deepEqual(await log.commitsAfter(id, 0, 100), old.commits, `the whole log of ${id}`);
        t.deepEqual(await log.commitsAfter(id, 2, 3), old.commits.filter((c) => c.revision > 2).slice(0, 3), `a page of the log of ${id}`);
        for (const [revision, answer] of old.at) t.deepEqual(await store.sessionAt(account, id, revision), answer, `${id} at revision ${revision}`);
      }
      t.is(await store.sessionAt(account, deleted, 3), undefined);

      // Each text is stored once: the log of a turn holds none, and a revision only text that is no element's.
      // (fields_updated is stored as it is: its actor_input is the session's, whatever it says.)
      const logText = z
        .array(z.object({ session_id: z.string(), revision: z.coerce.number(), events: z.string() }))
        .parse((await db.raw('select session_id, revision, events::text as events from session_commits')).rows);
      t.is(logText.length, 10, 'one row per logged revision');
      const turns = logText.filter((r) => r.session_id === chat && [2, 4, 7, 8].includes(r.revision));
      t.is(turns.length, 4);
      t.false(
        turns.some((r) => r.events.includes('utterance-')),
        'no utterance in the log of a turn',
      );
      t.true(turns.some((r) => r.events.includes('kept-text')) && turns.some((r) => r.events.includes('kept-input')), "text that is not the element's stays");
      const storedAt = async (revision: number) => (await db('session_commits').where({ session_id: chat, revision }).first()).events;
      t.deepEqual(await storedAt(2), [
        { type: 'state_changed', v: 1, fromState: 'asking', toState: 'answering', event: 'user_input', actor: 'user', actorInputSeq: 1 },
        { type: 'dialogue_appended', v: 1, seq: 1 },
      ]);
      t.deepEqual(await storedAt(4), [{ type: 'dialogue_appended', v: 1, seq: 2, actor: 'system', event: '', timestamp: '2026-11-01T10:04:00.001Z' }]);
      const revisions = z
        .array(z.object({ revision: z.coerce.number(), actor_input: z.string().nullable(), has_fields: z.boolean() }))
        .parse((await db.raw('select revision, actor_input, fields is not null as has_fields from genie_session_revisions where session_id = ? order by revision', [chat])).rows);
      t.deepEqual(
        revisions.map((r) => [r.revision, r.actor_input, r.has_fields]),
        [
          [1, '', true],
          [2, null, false],
          [3, null, true],
          [4, null, false],
          [5, null, false],
          [6, 'typed by hand', false],
          [7, null, true],
          [8, 'kept-input', false],
        ],
      );
      const forkRevision = await db('genie_session_revisions').where({ session_id: forked }).first();
      t.is(forkRevision.actor_input, null, "the fork's actor_input is its last element's text");
      t.truthy(forkRevision.fields, 'revision 1 always has its fields');
      t.false(await db.schema.hasTable('session_events'));
    } finally {
      await db.destroy();
      await drop();
    }
  });
}
