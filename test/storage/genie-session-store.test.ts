import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { dialogueAppended, fieldsUpdated, secondaryPut, sessionCreated, sessionDeleted, stateChanged } from '../../src/genie/events.js';
import type { SessionWrite, StoredSession, WriteResult } from '../../src/genie/store.js';
import { migrate, type Db } from '../../src/storage/db.js';
import { KnexSessionEventLog } from '../../src/storage/genie-event-log.js';
import { KnexSessionStore } from '../../src/storage/genie-store.js';
import { txOf } from '../../src/storage/knex-tx.js';
import { testWhen } from '../helpers/backends.js';
import { dbBackends } from '../helpers/db-backends.js';

const backends = dbBackends;

interface Ctx {
  db: Db;
  store: KnexSessionStore;
  log: KnexSessionEventLog;
  account: string;
  create: (fields?: Record<string, unknown>, endUserId?: string) => Promise<StoredSession>;
  /** commitRevision under the session's lock, as the use cases do. */
  commit: (current: StoredSession, w: SessionWrite) => Promise<WriteResult>;
  /** Rows a session has in each of its tables. */
  counts: (id: string) => Promise<Record<string, number>>;
}

async function withStore(open: () => Promise<{ db: Db; drop: () => Promise<void> }>, run: (c: Ctx) => Promise<void>): Promise<void> {
  const { db, drop } = await open();
  try {
    await migrate(db);
    const store = new KnexSessionStore(db);
    const account = randomUUID();
    await db('accounts').insert({ id: account, account_number: '1111-2222-3333' });
    const create = async (fields: Record<string, unknown> = { topic: 'tea' }, endUserId?: string) => {
      const s = { id: randomUUID(), accountId: account, modelType: 'qa', schemaVersion: 1, state: 'asking', actor: '' as const, actorInput: '', fields, tokenEncoding: 'o200k_base' as const };
      const created = sessionCreated({ modelType: 'qa', schemaVersion: 1, state: 'asking', fields });
      const r = await db.transaction((trx) =>
        store.insertSession({ ...s, endUserId, forkedFromSessionId: undefined, forkedFromRevision: undefined, expireTime: undefined, labels: {} }, undefined, [created], txOf(trx)),
      );
      return r.session;
    };
    const commit = (current: StoredSession, w: SessionWrite) =>
      db.transaction(async (trx) => {
        const locked = await store.lockSession(current.accountId, current.id, 'update', txOf(trx));
        return store.commitRevision(locked!, w, txOf(trx));
      });
    const counts = async (id: string) => {
      const out: Record<string, number> = {};
      for (const [table, column] of [
        ['genie_session_revisions', 'session_id'],
        ['genie_dialogue', 'session_id'],
        ['session_commits', 'session_id'],
        ['genie_secondary', 'session_id'],
      ] as const) {
        out[table] = Number((await db(table).where(column, id).count({ n: '*' }))[0]!.n);
      }
      return out;
    };
    await run({ db, store, log: new KnexSessionEventLog(db), account, create, commit, counts });
  } finally {
    await db.destroy();
    await drop();
  }
}

const at = new Date('2026-11-01T10:00:00.123Z');
/** The guard of a write decided on the versions the test registered (only 1). */
const CURRENT_TYPE = { latestSchemaVersion: 1 };

/** A SendEvent: one element, the transition and the element logged, the utterance as the actor input. */
function turn(current: StoredSession, text: string, over: Partial<SessionWrite> = {}): SessionWrite {
  const toState = current.state === 'asking' ? 'answering' : 'asking';
  // Stands for a count (the store stores what the use case counted).
  const element = { actor: 'user' as const, actorText: text, event: 'say', timestamp: at, tokenCount: text.length };
  const actorInput = over.actorInput ?? text;
  return {
    schemaVersion: current.schemaVersion,
    state: toState,
    actor: 'user',
    actorInput,
    fields: current.fields,
    expireTime: undefined,
    labels: current.labels,
    dialogue: [element],
    events: [stateChanged({ fromState: current.state, toState, event: 'say', actor: 'user', actorInput }), dialogueAppended(current.dialogueLength + 1, element)],
    ...over,
  };
}

/** An UpdateSession: no element, the fields and/or the actor input changed. */
function update(current: StoredSession, change: { fields?: Record<string, unknown>; actorInput?: string }): SessionWrite {
  const fields = change.fields ?? current.fields;
  const actorInput = change.actorInput ?? current.actorInput;
  return {
    schemaVersion: current.schemaVersion,
    state: current.state,
    actor: current.actor,
    actorInput,
    fields,
    expireTime: undefined,
    labels: current.labels,
    dialogue: [],
    events: [fieldsUpdated({ updateMask: ['fields'], fields, actor: current.actor, actorInput })],
  };
}

/** A WriteResult without what differs between two sessions written alike (ids, clocks). */
const shape = (r: WriteResult | undefined) =>
  r && {
    session: { ...r.session, id: '', createdAt: 0, updatedAt: 0 },
    last: r.last && { ...r.last },
    commit: r.commit,
  };

for (const backend of backends) {
  const test = testWhen(backend.enabled, 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL to cover a real Postgres');

  test(`${backend.name}: commitIfAt at the current revision writes what commitRevision writes and answers the same`, async (t) => {
    await withStore(backend.open, async ({ db, store, log, create, commit, counts }) => {
      const [a, b] = [await create(), await create()];
      const viaLock = await commit(a, turn(a, 'hello'));
      const viaGuard = await store.commitIfAt(b, turn(b, 'hello'), CURRENT_TYPE);
      t.truthy(viaGuard);
      t.deepEqual(shape(viaGuard), shape(viaLock));
      t.like(viaGuard!.session, { revision: 2, dialogueLength: 1, dialogueTokenCount: 5, state: 'answering', actor: 'user', actorInput: 'hello', fields: { topic: 'tea' } });
      t.deepEqual(viaGuard!.last, { seq: 1, actor: 'user', actorText: 'hello', event: 'say', timestamp: at, revision: 2, tokenCount: 5 });
      t.deepEqual(await counts(b.id), await counts(a.id));
      t.deepEqual(await counts(b.id), { genie_session_revisions: 2, genie_dialogue: 1, session_commits: 2, genie_secondary: 0 });
      t.deepEqual((await db('session_commits').where({ session_id: b.id, revision: 2 }).first()).events, [
        { type: 'state_changed', v: 1, fromState: 'asking', toState: 'answering', event: 'say', actor: 'user', actorInputSeq: 1 },
        { type: 'dialogue_appended', v: 1, seq: 1 },
      ]);

      // Everything reads back as written: the head, the log, the revision, the dialogue.
      const s2 = viaGuard!.session;
      t.deepEqual(await store.readSession(b.accountId, b.id), s2);
      t.deepEqual(await log.commitsAfter(b.id, 1, 10), [viaGuard!.commit]);
      t.deepEqual(await store.sessionAt(b.accountId, b.id, 2), { session: s2, dialogue: [viaGuard!.last!] });

      // Nothing appended: the answer's last element is the session's last one (none at all before any turn).
      const u = await store.commitIfAt(s2, update(s2, { fields: { topic: 'cake' } }), CURRENT_TYPE);
      t.deepEqual(u!.last, viaGuard!.last);
      t.like(u!.session, { revision: 3, dialogueLength: 1, actorInput: 'hello', fields: { topic: 'cake' } });
      const c = await create();
      const empty = await store.commitIfAt(c, update(c, { actorInput: 'typed' }), CURRENT_TYPE);
      t.is(empty!.last, undefined);
      t.like(empty!.session, { revision: 2, dialogueLength: 0, actorInput: 'typed' });
      t.deepEqual(await store.sessionAt(c.accountId, c.id, 2), { session: empty!.session, dialogue: [] });
    });
  });

  test(`${backend.name}: commitIfAt writes nothing and answers undefined when the revision moved, the session is deleted or another account's`, async (t) => {
    await withStore(backend.open, async ({ db, store, log, create, commit, counts }) => {
      const s = await create();
      const moved = await commit(s, turn(s, 'first'));
      const before = await counts(s.id);
      t.is(await store.commitIfAt(s, turn(s, 'stale'), CURRENT_TYPE), undefined, 'the revision moved');
      t.is(await store.commitIfAt({ ...moved.session, accountId: randomUUID() }, turn(moved.session, 'theirs'), CURRENT_TYPE), undefined, "another account's");
      t.deepEqual(await counts(s.id), before);
      t.deepEqual(await store.readSession(s.accountId, s.id), moved.session);
      t.deepEqual((await log.commitsAfter(s.id, 0, 10)).map((c) => c.revision), [1, 2]);
      await t.throwsAsync(store.commitIfAt(moved.session, { ...update(moved.session, {}), secondary: { key: 'k', value: Buffer.from('v') } }, CURRENT_TYPE), {
        instanceOf: Error,
        message: /commitIfAt writes no secondary value/,
      });

      const gone = await create();
      await db.transaction((trx) => store.tombstone(gone, [sessionDeleted()], new Date(), txOf(trx)));
      t.is(await store.commitIfAt(gone, turn(gone, 'late'), CURRENT_TYPE), undefined, 'deleted');
      t.is(await store.readSession(gone.accountId, gone.id), undefined);
      t.deepEqual(await counts(gone.id), { genie_session_revisions: 0, genie_dialogue: 0, session_commits: 1, genie_secondary: 0 });
      t.is(await store.readSession(randomUUID(), s.id), undefined, "another account's session is not read");

      // A version of the type newer than the writer's cached ones was registered: the write is refused.
      await db('genie_model_types').insert({ account_id: s.accountId, name: 'qa', schema_version: 2, state_machine: '{}', upgrades: '[]' });
      t.is(await store.commitIfAt(moved.session, turn(moved.session, 'on old versions'), CURRENT_TYPE), undefined, 'a newer model type version');
      t.truthy(await store.commitIfAt(moved.session, turn(moved.session, 'on the new ones'), { latestSchemaVersion: 2 }));
    });
  });

  test(`${backend.name}: racing commitIfAt at one revision: exactly one writes`, async (t) => {
    await withStore(backend.open, async ({ store, create, counts }) => {
      const s = await create();
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => store.commitIfAt(s, turn(s, `racer ${i}`), CURRENT_TYPE)));
      const won = results.filter((r) => r !== undefined);
      t.is(won.length, 1);
      t.deepEqual(await store.readSession(s.accountId, s.id), won[0]!.session);
      t.deepEqual(await counts(s.id), { genie_session_revisions: 2, genie_dialogue: 1, session_commits: 2, genie_secondary: 0 });
    });
  });

  test(`${backend.name}: a revision stores no copy of an utterance or of unchanged fields, and time travel restores them`, async (t) => {
    await withStore(backend.open, async ({ db, store, log, create, commit }) => {
      let s = await create({ topic: 'tea', profile: { age: 30 } });
      const written = [s];
      const write = async (w: (c: StoredSession) => SessionWrite, how: 'lock' | 'guard') => {
        const r = how === 'lock' ? await commit(s, w(s)) : await store.commitIfAt(s, w(s), CURRENT_TYPE);
        s = r!.session;
        written.push(s);
        return r!;
      };
      const text = (n: number) => `utterance-${n} ${'é'.repeat(200)}`;
      await write((c) => turn(c, text(1)), 'guard'); // 2: appends, actor input = its text
      await write((c) => update(c, { fields: { topic: 'cake' } }), 'lock'); // 3: fields change, actor input still the last element's
      await write((c) => update(c, { actorInput: 'typed by hand' }), 'guard'); // 4: an actor input that is no element's
      await write((c) => turn(c, text(2), { actorInput: 'not what was said' }), 'lock'); // 5: appends, another actor input
      await write((c) => turn(c, text(3), { fields: { topic: 'cake', turns: 1 } }), 'guard'); // 6: appends, fields change
      const put = await write((c) => ({ ...update(c, {}), events: [secondaryPut('doc', 3)], secondary: { key: 'doc', value: Buffer.from('abc') } }), 'lock'); // 7
      t.is(put.session.revision, 7);
      t.like(await store.secondary(s.id, 'doc'), { key: 'doc', sizeBytes: 3, revision: 7 });

      const stored = z
        .array(z.object({ revision: z.coerce.number(), actor_input: z.string().nullable(), fields: z.unknown() }))
        .parse((await db.raw('select revision, actor_input, fields from genie_session_revisions where session_id = ? order by revision', [s.id])).rows);
      t.deepEqual(
        stored.map((r) => [r.revision, r.actor_input, r.fields !== null]),
        [
          [1, '', true],
          [2, null, false],
          [3, null, true],
          [4, 'typed by hand', false],
          [5, 'not what was said', false],
          [6, null, true],
          [7, null, false],
        ],
      );
      // The turns' log holds no utterance (fields_updated is stored as it is, the session's actor input with it).
      const logged = z
        .array(z.object({ events: z.string() }))
        .parse((await db.raw('select events::text as events from session_commits where session_id = ? and revision in (2, 5, 6)', [s.id])).rows);
      t.is(logged.length, 3);
      t.false(logged.some((r) => r.events.includes('utterance-')), 'no utterance in the log of a turn');

      for (const w of written) {
        const found = await store.sessionAt(s.accountId, s.id, w.revision);
        t.deepEqual(found?.session, w, `revision ${w.revision}`);
        t.is(found?.dialogue.length, w.dialogueLength);
      }
      const replay = await log.commitsAfter(s.id, 0, 100);
      t.deepEqual(
        replay.flatMap((c) => c.events.flatMap((e) => (e.type === 'state_changed' ? [e.actorInput] : e.type === 'dialogue_appended' ? [e.actorText] : []))),
        [text(1), text(1), 'not what was said', text(2), text(3), text(3)],
      );
      t.deepEqual(
        (await log.commitsAfter(s.id, 3, 2)).map((c) => c.revision),
        [4, 5],
      );
    });
  });

  test(`${backend.name}: dialogueTail answers the newest elements up to a position, oldest first`, async (t) => {
    await withStore(backend.open, async ({ store, create, commit }) => {
      let s = await create();
      for (let i = 1; i <= 5; i++) s = (await commit(s, turn(s, `t${i}`))).session;
      const texts = async (upTo: number, n: number) => (await store.dialogueTail(s.id, upTo, n)).map((d) => d.actorText);
      t.deepEqual(await texts(5, 2), ['t4', 't5']);
      t.deepEqual(await texts(3, 2), ['t2', 't3']);
      t.deepEqual(await texts(5, 10), ['t1', 't2', 't3', 't4', 't5']);
      t.deepEqual(await texts(5, 0), []);
      t.deepEqual(await texts(0, 3), []);
    });
  });

  test(`${backend.name}: an end user's sessions: listed by filter, found oldest first for erasure, and a tombstone keeps no end user and counts what it removed`, async (t) => {
    await withStore(backend.open, async ({ db, store, account, create, commit, counts }) => {
      const mine = [await create({ topic: 'a' }, 'u1'), await create({ topic: 'b' }, 'u2'), await create({ topic: 'c' }, 'u1'), await create({ topic: 'd' })];
      t.is(mine[0]!.endUserId, 'u1');
      t.is(mine[3]!.endUserId, undefined);
      const listed = await store.listSessions(account, { endUserId: 'u1' }, { by: 'seq', desc: false }, undefined, 10);
      t.deepEqual(
        listed.map((r) => r.session.id),
        [mine[0]!.id, mine[2]!.id],
      );
      t.deepEqual(await store.endUserSessions(account, 'u1', 1), [mine[0]!.id]);
      t.deepEqual(await store.endUserSessions(randomUUID(), 'u1', 10), [], 'another account has no such end user');

      let s = mine[0]!;
      s = (await commit(s, turn(s, 'one'))).session;
      s = (await commit(s, { ...turn(s, 'two'), secondary: { key: 'k', value: Buffer.from('v') } })).session;
      t.is((await store.sessionAt(account, s.id, 2))?.session.endUserId, 'u1', 'time travel keeps the end user');
      const gone = await db.transaction((trx) => store.tombstone(s, [sessionDeleted()], new Date(), txOf(trx)));
      t.deepEqual(gone.removed, { dialogue: 2, revisions: 3, secondary: 1, requestIds: 0 });
      t.deepEqual(await counts(s.id), { genie_session_revisions: 0, genie_dialogue: 0, session_commits: 1, genie_secondary: 0 });
      t.is((await db('genie_sessions').where({ id: s.id }).first('end_user_id')).end_user_id, null);
      t.deepEqual(await store.endUserSessions(account, 'u1', 10), [mine[2]!.id]);
    });
  });
}
