import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { ListPromptsRequest, OpenPromptRequest, Prompt } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { bufCurl } from '../helpers/buf-curl.js';

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const open = (tenant: Tenant, labels: Record<string, string>, over: Partial<OpenPromptRequest> = {}) =>
  rpc(
    s.prompt,
    s.prompt.openPrompt,
    { sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels, ...over },
    tenant.md,
  );
const setLabels = (tenant: Tenant, p: Prompt, labels: Record<string, string>, updateMask: string[] | undefined = ['labels']) =>
  rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, labels }, updateMask, requestId: '', expectedRevision: undefined }, tenant.md);
const list = (tenant: Tenant, over: Partial<ListPromptsRequest> = {}) =>
  rpc(
    s.prompt,
    s.prompt.listPrompts,
    { pageSize: 0, pageToken: '', llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '', filter: '', orderBy: '', showTotalSize: false, ...over },
    tenant.md,
  );
const ids = (xs: Prompt[]) => xs.map((x) => x.id);

async function pages(t: { is(a: unknown, b: unknown, m?: string): void }, tenant: Tenant, over: Partial<ListPromptsRequest>, pageSize: number, total: number): Promise<string[]> {
  const out: string[] = [];
  let pageToken = '';
  do {
    const r = await list(tenant, { ...over, pageSize, pageToken, showTotalSize: true });
    t.is(r.totalSize, total);
    out.push(...ids(r.prompts));
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

async function refused(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected an error');
}

test('prompt labels: set when OpenPrompt creates, ignored when it resumes, replaced by UpdatePrompt path labels, bounded', async (t) => {
  const tenant = await createTenant(s);
  const p = (await open(tenant, { team: 'hr', constructor: 'c' })).prompt!;
  t.deepEqual({ ...p.labels }, { team: 'hr', constructor: 'c' });
  const resumed = await open(tenant, { team: 'other' }, { sessionKey: p.sessionKey, llmClientId: '' });
  t.false(resumed.created);
  t.deepEqual({ ...resumed.prompt!.labels }, { team: 'hr', constructor: 'c' });
  const u = await setLabels(tenant, p, { tier: 'gold' });
  t.true(u.changed);
  t.deepEqual({ ...u.prompt!.labels }, { tier: 'gold' });
  t.false((await setLabels(tenant, u.prompt!, { tier: 'gold' })).changed);
  // Through the cache: the read after the write sees the new labels.
  t.deepEqual({ ...(await open(tenant, {}, { sessionKey: p.sessionKey, llmClientId: '' })).prompt!.labels }, { tier: 'gold' });
  t.deepEqual({ ...(await rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: undefined }, tenant.md)).prompt!.labels }, { tier: 'gold' });
  const bad = await refused(open(tenant, { Team: 'x' }));
  t.is(bad.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(bad), ['labels']);
  const long = await refused(setLabels(tenant, u.prompt!, { k: 'Z'.repeat(3000) }));
  t.deepEqual(violatedFields(long), ['prompt.labels']);
  t.false(long.message.includes('ZZZZZZZZZZ'));
  const many = await refused(open(tenant, Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))));
  t.deepEqual(violatedFields(many), ['labels']);
});

test('ListPrompts: every filter form, refused ones, order_by across pages with total_size, other accounts never match', async (t) => {
  const tenant = await createTenant(s);
  const made: Prompt[] = [];
  for (let i = 0; i < 6; i++) made.push((await open(tenant, i % 2 ? { batch: 'odd' } : { batch: 'even', even: 'y' }, { endUserId: i < 2 ? 'u1' : '' })).prompt!);
  const f = async (filter: string) => ids((await list(tenant, { filter })).prompts);
  const newest = ids([...made].reverse());
  t.deepEqual(await f(''), newest);
  t.deepEqual(await f('labels.batch = "odd"'), ids([made[5]!, made[3]!, made[1]!]));
  t.deepEqual(await f('labels.even:*'), ids([made[4]!, made[2]!, made[0]!]));
  t.deepEqual(await f('labels.batch = "odd" AND labels.batch = "even"'), []);
  t.deepEqual(await f('end_user_id = "u1"'), ids([made[1]!, made[0]!]));
  t.deepEqual(await f(`llm_client_id = "${tenant.llmClientId}"`), newest);
  t.deepEqual(await f('llm_client_id = "not-a-uuid"'), []);
  const at = made[3]!.createTime!.toISOString();
  t.deepEqual(await f(`create_time >= "${at}"`), ids([made[5]!, made[4]!, made[3]!]));
  t.deepEqual(await f(`create_time < "${at}" AND labels.batch = "even"`), ids([made[2]!, made[0]!]));
  // Updates in another order: 4, 0, 2.
  for (const i of [4, 0, 2]) await setLabels(tenant, made[i]!, { batch: 'even', touched: String(i) });
  // Times come back with milliseconds; Postgres keeps microseconds, so `>=` a returned time includes its prompt.
  const touchedAt = (await list(tenant, { filter: 'labels.touched = "0"' })).prompts[0]!.updateTime!.toISOString();
  t.deepEqual(await f(`update_time >= "${touchedAt}"`), ids([made[2]!, made[0]!]));
  t.deepEqual(await pages(t, tenant, {}, 4, 6), newest);
  t.deepEqual(await pages(t, tenant, { orderBy: 'create_time' }, 2, 6), ids(made));
  t.deepEqual(await pages(t, tenant, { orderBy: 'create_time desc' }, 5, 6), newest);
  const byUpdate = [1, 3, 5, 4, 0, 2].map((i) => made[i]!.id);
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time' }, 2, 6), byUpdate);
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time desc' }, 4, 6), [...byUpdate].reverse());
  t.deepEqual(await pages(t, tenant, { orderBy: 'update_time desc', filter: 'labels.touched:*' }, 1, 3), [2, 0, 4].map((i) => made[i]!.id));
  for (const [filter, why] of [
    ['state = "x"', /does not filter by/],
    ['model_type = "x"', /does not filter by/],
    ['description = "x"', /not filterable/],
    ['tags = "x"', /not filterable/],
    ['labels.a = "x" OR labels.b = "y"', /OR/],
    ['NOT labels.a:*', /NOT/],
  ] as const) {
    const err = await refused(list(tenant, { filter }));
    t.deepEqual(violatedFields(err), ['filter'], filter);
    t.regex(err.message, why, filter);
  }
  t.deepEqual(violatedFields(await refused(list(tenant, { orderBy: 'name' }))), ['order_by']);
  const first = await list(tenant, { pageSize: 2, orderBy: 'update_time' });
  t.deepEqual(violatedFields(await refused(list(tenant, { pageSize: 2, orderBy: 'create_time', pageToken: first.nextPageToken }))), ['page_token']);
  const other = await createTenant(s);
  await open(other, { batch: 'odd' });
  t.is((await list(tenant, { filter: 'labels.batch = "odd"', showTotalSize: true })).totalSize, 3);
  t.is((await list(other, { filter: 'labels.batch = "odd"', showTotalSize: true })).totalSize, 1);
});

test('every prompt filter shape and order is served by an index: EXPLAIN shows no Seq Scan on prompts', async (t) => {
  const tenant = await createTenant(s);
  for (let i = 0; i < 4; i++) await open(tenant, { team: `t${i}` }, { endUserId: i % 2 ? 'u1' : '' });
  const db = s.app.db;
  const captured: Array<{ sql: string; bindings: unknown[] }> = [];
  const onQuery = (q: { sql: string; bindings?: unknown[] }) => {
    if (/from "prompts"/.test(q.sql) && /"account_id" = /.test(q.sql) && !/for update/.test(q.sql)) captured.push({ sql: q.sql, bindings: q.bindings ?? [] });
  };
  db.on('query', onQuery);
  const shapes: Array<Partial<ListPromptsRequest>> = [
    { filter: 'labels.team = "t1"' },
    { filter: 'labels.team:*' },
    { filter: 'end_user_id = "u1"' },
    { filter: `llm_client_id = "${tenant.llmClientId}"` },
    { filter: 'create_time > "2020-01-01T00:00:00Z"' },
    { filter: 'update_time <= "2999-01-01T00:00:00Z"' },
    { orderBy: 'create_time' },
    { orderBy: 'update_time desc' },
    { orderBy: 'update_time', filter: 'labels.team:*' },
  ];
  try {
    for (const shape of shapes) {
      const r = await list(tenant, { ...shape, pageSize: 1, showTotalSize: true });
      await list(tenant, { ...shape, pageSize: 1, pageToken: r.nextPageToken });
    }
  } finally {
    db.removeListener('query', onQuery);
  }
  t.true(captured.length >= shapes.length * 3);
  for (const q of captured) {
    const sql = q.sql.replace(/\?/g, '\\?').replace(/\$\d+/g, '?');
    const plan = await db.transaction(async (trx) => {
      await trx.raw('SET LOCAL enable_seqscan = off');
      const { rows } = (await trx.raw(`EXPLAIN ${sql}`, q.bindings as never)) as { rows: Array<{ 'QUERY PLAN': string }> };
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    t.notRegex(plan, /Seq Scan on prompts/, `${q.sql}\n${plan}`);
    t.regex(plan, /Index|Bitmap/, plan);
  }
  // On a table this small the planner may prefer the account's b-tree and filter the labels there; the
  // label predicates on their own show that the GIN index serves both operators.
  for (const predicate of [`labels @> '{"team":"t1"}'::jsonb`, `labels \\? 'team'`]) {
    const plan = await db.transaction(async (trx) => {
      await trx.raw('SET LOCAL enable_seqscan = off');
      const { rows } = (await trx.raw(`EXPLAIN SELECT count(*) FROM prompts WHERE ${predicate}`)) as { rows: Array<{ 'QUERY PLAN': string }> };
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    t.regex(plan, /prompts_labels/, plan);
  }
});

test('JSON callers: prompt labels and ListPrompts filter through buf curl', async (t) => {
  const tenant = await createTenant(s);
  const key = tenant.md.get('authorization')[0] as string;
  const opened = await bufCurl(s.address, 'parley.prompt.v1.PromptService/OpenPrompt', { llm_client_id: tenant.llmClientId, labels: { team: 'json' } }, key);
  t.deepEqual(opened.prompt.labels, { team: 'json' });
  const listed = await bufCurl(s.address, 'parley.prompt.v1.PromptService/ListPrompts', { filter: 'labels.team:*', order_by: 'update_time desc', show_total_size: true }, key);
  t.is(listed.totalSize, 1);
  t.is(listed.prompts[0].id, opened.prompt.id);
  const bad = await bufCurl(s.address, 'parley.prompt.v1.PromptService/ListPrompts', { filter: 'state = "x"' }, key);
  t.is(bad.code, 'invalid_argument');
});
