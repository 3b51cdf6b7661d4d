import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { GenieSession, ListSessionsRequest } from '../../src/gen/parley/genie/v1/genie.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { bufCurl } from '../helpers/buf-curl.js';
import { genie, modelType, sessionValues } from '../genie/fixtures.js';
import { Watcher } from '../helpers/watch.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const create = (tenant: Tenant, labels: Record<string, string>, endUserId = '') =>
  rpc(s.genie, s.genie.createSession, { modelType: 'qa', fields: { topic: 't' }, expireTime: undefined, requestId: '', endUserId, labels }, tenant.md).then((r) => r.session!);
const setLabels = (tenant: Tenant, sessionId: string, labels: Record<string, string>, mask: string[] | undefined = ['labels']) =>
  rpc(s.genie, s.genie.updateSession, { session: sessionValues(sessionId, { labels }), updateMask: mask, expectedRevision: undefined, fieldsPatch: undefined, requestId: '' }, tenant.md);
const list = (tenant: Tenant, over: Partial<ListSessionsRequest> = {}) =>
  rpc(s.genie, s.genie.listSessions, { modelType: '', state: '', pageSize: 0, pageToken: '', endUserId: '', filter: '', orderBy: '', showTotalSize: false, ...over }, tenant.md);
const ids = (xs: GenieSession[]) => xs.map((x) => x.sessionId);

/** Every page of a list with `pageSize`, checking total_size on each; resolves to the ids in order. */
async function pages(t: { is(a: unknown, b: unknown, m?: string): void }, tenant: Tenant, over: Partial<ListSessionsRequest>, pageSize: number, total?: number): Promise<string[]> {
  const out: string[] = [];
  let pageToken = '';
  do {
    const r = await list(tenant, { ...over, pageSize, pageToken, showTotalSize: total !== undefined });
    if (total !== undefined) t.is(r.totalSize, total, `total_size on page ${out.length / pageSize + 1}`);
    out.push(...ids(r.sessions));
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

async function refused(t: { fail(m: string): void }, p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  t.fail('expected INVALID_ARGUMENT');
  throw new Error('unreachable');
}

async function tenantWithType(): Promise<Tenant> {
  const tenant = await createTenant(s);
  await genie(s, tenant).register(modelType());
  return tenant;
}

test('labels: set at creation, replaced and cleared by UpdateSession path labels, inherited by a fork, not versioned', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const a = await create(tenant, { team: 'red', constructor: 'x' });
  t.deepEqual({ ...a.labels }, { team: 'red', constructor: 'x' });
  t.deepEqual({ ...(await g.get(a.sessionId)).labels }, { team: 'red', constructor: 'x' });
  const replaced = await setLabels(tenant, a.sessionId, { tier: 'gold' });
  t.true(replaced.changed);
  t.is(replaced.session!.revision, 2);
  t.deepEqual({ ...replaced.session!.labels }, { tier: 'gold' });
  // The same labels again change nothing: no revision.
  const same = await setLabels(tenant, a.sessionId, { tier: 'gold' });
  t.false(same.changed);
  t.is(same.session!.revision, 2);
  // Without a mask a non-empty map is a populated field; with `*` too.
  t.deepEqual({ ...(await setLabels(tenant, a.sessionId, { tier: 'silver' }, undefined)).session!.labels }, { tier: 'silver' });
  // Revision 1 shows the current labels: they describe the session, not a revision.
  t.deepEqual({ ...(await g.get(a.sessionId, 1)).labels }, { tier: 'silver' });
  const fork = await g.fork(a.sessionId);
  t.deepEqual({ ...fork.labels }, { tier: 'silver' });
  t.deepEqual({ ...(await g.get(fork.sessionId)).labels }, { tier: 'silver' });
  const cleared = await setLabels(tenant, a.sessionId, {});
  t.true(cleared.changed);
  t.deepEqual({ ...(await g.get(a.sessionId)).labels }, {});
  // Other updates leave labels alone.
  await setLabels(tenant, a.sessionId, { k: 'v' });
  await g.patch(a.sessionId, { topic: 'other' });
  t.deepEqual({ ...(await g.get(a.sessionId)).labels }, { k: 'v' });
  // A mask naming one label is refused: labels are replaced whole.
  const one = await refused(t, setLabels(tenant, a.sessionId, { k: 'w' }, ['labels.k']));
  t.is(one.code, status.INVALID_ARGUMENT);
  // Watchers see a labels change as fields_updated naming labels in its mask (replayed from the log here).
  const w = new Watcher(s.genie, tenant.md, a.sessionId, 1);
  try {
    await w.until((x) => x.caughtUp() !== undefined, 'caught_up');
    const masks = w.updates.flatMap((u) => u.commit?.events.flatMap((e) => (e.fieldsUpdated ? [e.fieldsUpdated.updateMask] : [])) ?? []);
    t.deepEqual(masks[0], ['labels']);
    t.true(masks.some((m) => m.includes('fields')));
  } finally {
    w.call.cancel();
  }
});

test('labels out of bounds are INVALID_ARGUMENT naming labels, without echoing long input', async (t) => {
  const tenant = await tenantWithType();
  const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
  const long = 'Z'.repeat(5000);
  const cases: Array<[string, Record<string, string>]> = [
    ['65 labels', many],
    ['an upper-case key', { Team: 'x' }],
    ['a key starting with a digit', { '1a': 'x' }],
    ['a key of 64 characters', { ['k'.repeat(64)]: 'x' }],
    ['an empty key', { '': 'x' }],
    ['a long key', { [long.toLowerCase()]: 'x' }],
    ['a value of 257 characters', { k: 'v'.repeat(257) }],
    ['a long value', { k: long }],
    ['a control character', { k: 'a\nb' }],
  ];
  for (const [what, labels] of cases) {
    const err = await refused(t, create(tenant, labels));
    t.is(err.code, status.INVALID_ARGUMENT, what);
    t.deepEqual(violatedFields(err), ['labels'], what);
    t.false(err.message.includes('ZZZZZZZZZZ') || err.message.includes('zzzzzzzzzz'), what);
    const created = await create(tenant, {});
    const upd = await refused(t, setLabels(tenant, created.sessionId, labels));
    t.deepEqual(violatedFields(upd), ['session.labels'], what);
  }
  // The edges are accepted.
  const edge = await create(tenant, { ...Object.fromEntries(Array.from({ length: 63 }, (_, i) => [`k${i}`, 'v'])), ['a'.repeat(63)]: 'v'.repeat(256) });
  t.is(Object.keys(edge.labels).length, 64);
});

test('every filter form, ANDed with the typed filters; an equality that contradicts a typed filter matches nothing', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const a = await create(tenant, { team: 'red', tier: 'gold' }, 'u1');
  const b = await create(tenant, { team: 'blue' }, 'u2');
  const c = await create(tenant, { team: 'red' }, 'u1');
  const d = await create(tenant, {});
  await g.send(b.sessionId, 'user_input', 'q?', 'user');
  const mid = (await g.get(d.sessionId)).createTime!;
  const e = await create(tenant, { tier: 'gold' });
  await g.send(a.sessionId, 'user_input', 'q?', 'user');
  const f = async (filter: string, over: Partial<ListSessionsRequest> = {}) => ids((await list(tenant, { filter, ...over })).sessions);
  t.deepEqual(await f(''), ids([a, b, c, d, e]));
  t.deepEqual(await f('labels.team = "red"'), ids([a, c]));
  t.deepEqual(await f('labels.team = "red" AND labels.tier = "gold"'), ids([a]));
  t.deepEqual(await f('labels.team = "red" AND labels.team = "blue"'), []);
  t.deepEqual(await f('labels.tier:*'), ids([a, e]));
  t.deepEqual(await f('labels.tier:* AND labels.team:*'), ids([a]));
  t.deepEqual(await f('state = "awaiting_answer"'), ids([a, b]));
  t.deepEqual(await f('model_type = "qa" AND state = "awaiting_question"'), ids([c, d, e]));
  t.deepEqual(await f('model_type = "nope"'), []);
  t.deepEqual(await f('end_user_id = "u1"'), ids([a, c]));
  t.deepEqual(await f('end_user_id = "u1"', { endUserId: 'u1' }), ids([a, c]));
  t.deepEqual(await f('end_user_id = "u1"', { endUserId: 'u2' }), []);
  t.deepEqual(await f('state = "awaiting_answer"', { state: 'awaiting_question' }), []);
  t.deepEqual(await f('labels.team = "red"', { state: 'awaiting_question' }), ids([c]));
  const at = mid.toISOString();
  t.deepEqual(await f(`create_time > "${at}"`), ids([e]));
  t.deepEqual(await f(`create_time >= "${at}"`), ids([d, e]));
  t.deepEqual(await f(`create_time <= "${at}"`), ids([a, b, c, d]));
  t.deepEqual(await f(`create_time < "${at}"`), ids([a, b, c]));
  t.deepEqual(await f(`create_time = "${at}"`), ids([d]));
  // a was updated last (after e was created); b before e.
  t.deepEqual(await f(`update_time > "${(await g.get(e.sessionId)).updateTime!.toISOString()}"`), ids([a]));
  t.deepEqual(await f(`update_time >= "2000-01-01T00:00:00+02:00" AND update_time < "2999-01-01T00:00:00.123456Z"`), ids([a, b, c, d, e]));
  // A string literal with escapes.
  const q = await create(tenant, { quote: 'say "hi" \\ bye' });
  t.deepEqual(await f('labels.quote = "say \\"hi\\" \\\\ bye"'), ids([q]));
  // Deleted sessions never match nor count.
  await g.del(c.sessionId);
  const r = await list(tenant, { filter: 'labels.team = "red"', showTotalSize: true });
  t.deepEqual(ids(r.sessions), ids([a]));
  t.is(r.totalSize, 1);
  // Another account's sessions never match.
  const other = await tenantWithType();
  await create(other, { team: 'red' });
  t.deepEqual(await f('labels.team = "red"'), ids([a]));
  t.is((await list(other, { filter: 'labels.team = "red"', showTotalSize: true })).totalSize, 1);
});

test('refused filters and orders are INVALID_ARGUMENT on filter / order_by with a short reason', async (t) => {
  const tenant = await tenantWithType();
  const refusedFilters: Array<[string, RegExp]> = [
    ['labels.team = "a" OR labels.team = "b"', /OR/],
    ['NOT labels.team:*', /NOT/],
    ['-labels.team:*', /negation/],
    ['state != "x"', /!=/],
    ['labels.team != "x"', /!=/],
    ['fields.topic = "x"', /nested field/],
    ['actor_input = "x"', /not filterable/],
    ['description = "x"', /not filterable/],
    ['llm_client_id = "x"', /does not filter by/],
    ['revision > "1"', /not filterable/],
    ['hasPrefix(state, "a")', /function/],
    ['(state = "a")', /parentheses/],
    ['state = x', /double-quoted/],
    ['state = "a" labels.x:*', /AND was expected/],
    ['state = "a" AND', /ends with AND/],
    ['labels.team = "unterminated', /closing/],
    ['labels.Team = "x"', /label key/],
    ['labels.a.b = "x"', /flat/],
    ['labels.team:"x"', /only labels/],
    ['state:*', /: \(has\)/],
    ['create_time > "yesterday"', /RFC 3339/],
    ['create_time > "2025-13-01T00:00:00Z"', /RFC 3339/],
    ['state = "a" AND '.repeat(16) + 'state = "a"', /more than 16/],
    ['x'.repeat(2049), /2048/],
    [`labels.k = "${'v'.repeat(300)}"`, /at most 256/],
    ['state = "a" ; drop table x', /character/],
  ];
  for (const [filter, why] of refusedFilters) {
    const err = await refused(t, list(tenant, { filter }));
    t.is(err.code, status.INVALID_ARGUMENT, filter.slice(0, 60));
    t.deepEqual(violatedFields(err), ['filter'], filter.slice(0, 60));
    t.regex(err.message, why, filter.slice(0, 60));
    t.true(err.message.length < 400, filter.slice(0, 60));
  }
  for (const orderBy of ['seq', 'create_time up', 'update_time desc extra', 'name']) {
    const err = await refused(t, list(tenant, { orderBy }));
    t.deepEqual(violatedFields(err), ['order_by'], orderBy);
  }
});

test('order_by over create/update time, ascending and descending, across pages, with total_size on every page; tokens bind filter and order', async (t) => {
  const tenant = await tenantWithType();
  const g = genie(s, tenant);
  const made: GenieSession[] = [];
  for (let i = 0; i < 7; i++) made.push(await create(tenant, { batch: i % 2 ? 'odd' : 'even' }));
  await create(tenant, {});
  // Update in another order: 5, 1, 3 (so update order differs from creation order).
  for (const i of [5, 1, 3]) await g.patch(made[i]!.sessionId, { topic: `u${i}` });
  const all = await pages(t, tenant, {}, 3, 8);
  t.is(all.length, 8);
  t.deepEqual(all.slice(0, 7), ids(made));
  t.deepEqual(await pages(t, tenant, { orderBy: 'create_time' }, 2, 8), all);
  t.deepEqual(await pages(t, tenant, { orderBy: 'create_time desc' }, 3, 8), [...all].reverse());
  const byUpdate = [0, 2, 4, 6].map((i) => made[i]!.sessionId).concat(all[7]!, made[5]!.sessionId, made[1]!.sessionId, made[3]!.sessionId);
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time' }, 2, 8), byUpdate);
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time desc' }, 3, 8), [...byUpdate].reverse());
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time desc', filter: 'labels.batch = "odd"' }, 1, 3), [3, 1, 5].map((i) => made[i]!.sessionId));
  t.deepEqual(await pages(t, tenant, { orderBy: 'create_time', filter: 'labels.batch = "even"' }, 3, 4), [0, 2, 4, 6].map((i) => made[i]!.sessionId));
  // Without show_total_size, total_size is 0.
  t.is((await list(tenant, { pageSize: 2 })).totalSize, 0);
  // A token is bound to its filter and order.
  const first = await list(tenant, { pageSize: 2, orderBy: 'create_time', filter: 'labels.batch:*' });
  for (const over of [{ orderBy: 'create_time desc', filter: 'labels.batch:*' }, { orderBy: 'create_time', filter: 'labels.batch = "odd"' }, { orderBy: '', filter: 'labels.batch:*' }]) {
    const err = await refused(t, list(tenant, { pageSize: 2, pageToken: first.nextPageToken, ...over }));
    t.deepEqual(violatedFields(err), ['page_token']);
  }
  // A forged time cursor is refused before it reaches Postgres.
  const doc = JSON.parse(Buffer.from(first.nextPageToken, 'base64url').toString()) as Record<string, unknown>;
  const forged = Buffer.from(JSON.stringify({ ...doc, c: { seq: 1, at: 'not a time' } })).toString('base64url');
  t.deepEqual(violatedFields(await refused(t, list(tenant, { pageSize: 2, pageToken: forged, orderBy: 'create_time', filter: 'labels.batch:*' }))), ['page_token']);
});

test('every filter shape and order is served by an index: EXPLAIN shows no Seq Scan on genie_sessions', async (t) => {
  const tenant = await tenantWithType();
  for (let i = 0; i < 5; i++) await create(tenant, { team: `t${i}` }, i % 2 ? 'u1' : '');
  const db = s.app.db;
  const captured: Array<{ sql: string; bindings: unknown[] }> = [];
  const onQuery = (q: { sql: string; bindings?: unknown[] }) => {
    if (/from "genie_sessions" as "s"/.test(q.sql)) captured.push({ sql: q.sql, bindings: q.bindings ?? [] });
  };
  db.on('query', onQuery);
  const shapes = [
    { filter: 'labels.team = "t1"' },
    { filter: 'labels.team:*' },
    { filter: 'state = "awaiting_question"' },
    { filter: 'model_type = "qa"' },
    { filter: 'end_user_id = "u1"' },
    { filter: 'create_time > "2020-01-01T00:00:00Z"' },
    { filter: 'update_time <= "2999-01-01T00:00:00Z"' },
    { filter: 'labels.team = "t1" AND labels.team:* AND create_time > "2020-01-01T00:00:00Z"' },
    { orderBy: 'create_time desc' },
    { orderBy: 'update_time' },
    { orderBy: 'update_time desc', filter: 'labels.team:*' },
  ];
  try {
    for (const shape of shapes) {
      // A second page too: the keyset predicate must be served as well.
      const r = await list(tenant, { ...shape, pageSize: 1, showTotalSize: true });
      await list(tenant, { ...shape, pageSize: 1, pageToken: r.nextPageToken });
    }
  } finally {
    db.removeListener('query', onQuery);
  }
  t.true(captured.length >= shapes.length * 3);
  for (const q of captured) {
    // Back from native placeholders to knex's: a literal `?` (the jsonb operator) is escaped first.
    const sql = q.sql.replace(/\?/g, '\\?').replace(/\$\d+/g, '?');
    const plan = await db.transaction(async (trx) => {
      await trx.raw('SET LOCAL enable_seqscan = off');
      const { rows } = (await trx.raw(`EXPLAIN ${sql}`, q.bindings as never)) as { rows: Array<{ 'QUERY PLAN': string }> };
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    t.notRegex(plan, /Seq Scan on genie_sessions/, `${q.sql}\n${plan}`);
    t.regex(plan, /Index|Bitmap/, plan);
  }
  // On a table this small the planner may prefer the account's b-tree and filter the labels there; the
  // label predicates on their own show that the GIN index serves both operators.
  for (const predicate of [`labels @> '{"team":"t1"}'::jsonb`, `labels \\? 'team'`]) {
    const plan = await db.transaction(async (trx) => {
      await trx.raw('SET LOCAL enable_seqscan = off');
      const { rows } = (await trx.raw(`EXPLAIN SELECT count(*) FROM genie_sessions WHERE ${predicate}`)) as { rows: Array<{ 'QUERY PLAN': string }> };
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    t.regex(plan, /genie_sessions_labels/, plan);
  }
});

test('JSON callers: labels, filter, order_by and total_size through buf curl', async (t) => {
  const tenant = await tenantWithType();
  const key = tenant.md.get('authorization')[0] as string;
  const made = await bufCurl(s.address, 'parley.genie.v1.GenieService/CreateSession', { model_type: 'qa', fields: { topic: 'json' }, labels: { team: 'json', tier: 'gold' } }, key);
  t.deepEqual(made.session.labels, { team: 'json', tier: 'gold' });
  await bufCurl(s.address, 'parley.genie.v1.GenieService/CreateSession', { model_type: 'qa', fields: { topic: 'json' }, labels: { team: 'json' } }, key);
  const listed = await bufCurl(s.address, 'parley.genie.v1.GenieService/ListSessions', { filter: 'labels.team = "json"', order_by: 'create_time desc', page_size: 1, show_total_size: true }, key);
  t.is(listed.sessions.length, 1);
  t.is(listed.totalSize, 2);
  t.truthy(listed.nextPageToken);
  const updated = await bufCurl(
    s.address,
    'parley.genie.v1.GenieService/UpdateSession',
    { session: { session_id: made.session.sessionId, labels: { team: 'moved' } }, update_mask: 'labels' },
    key,
  );
  t.deepEqual(updated.session.labels, { team: 'moved' });
  const bad = await bufCurl(s.address, 'parley.genie.v1.GenieService/ListSessions', { filter: 'labels.team = "a" OR labels.team = "b"' }, key);
  t.is(bad.code, 'invalid_argument');
  t.regex(bad.message, /filter: uses OR/);
});
