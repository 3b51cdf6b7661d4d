import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';

let s: TestServer;
let tenant: Tenant;
/** Every list RPC, as a function of its page token, with at least two pages of data behind it. */
let lists: Array<{ name: string; call: (pageToken: string) => Promise<{ nextPageToken: string }> }>;

test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
  const md = tenant.md;
  const p = s.prompt;
  const g = genie(s, tenant);
  const plugins = [];
  for (const name of ['alpha', 'beta']) {
    plugins.push((await rpc(s.admin, s.admin.createPlugin, { accountId: tenant.accountId, name, description: '', requestId: '' }, s.adminMd)).plugin!);
  }
  const open = () => rpc(p, p.openPrompt, { labels: {}, endUserId: '', sessionKey: '', llmClientId: tenant.llmClientId, llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '' }, md);
  const { prompt } = await open();
  await open();
  const promptId = prompt!.id;
  for (const content of ['one', 'two']) {
    const messages = [{ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }];
    await rpc(p, p.appendHistory, { promptId, request: {}, response: {}, messages, requestId: '' }, md);
    const call = { promptId, pluginId: plugins[0]!.id, functionName: 'f', functionArgs: '{}', request: {}, response: {}, requestId: '' };
    await rpc(p, p.recordToolCall, call, md);
    await rpc(p, p.recordPluginUsage, { promptId, pluginId: plugins[0]!.id, inputText: content, requestId: '' }, md);
  }
  await g.register(modelType());
  await g.register(modelType({ name: 'qb' }));
  const { sessionId } = await g.create('qa');
  await g.create('qa');
  for (const key of ['a', 'b']) await g.put(sessionId, key, Buffer.from(key));

  const page = { pageSize: 1 };
  lists = [
    { name: 'AdminService.ListPlugins', call: (pageToken) => rpc(s.admin, s.admin.listPlugins, { accountId: tenant.accountId, ...page, pageToken }, s.adminMd) },
    { name: 'PromptService.ListPlugins', call: (pageToken) => rpc(p, p.listPlugins, { ...page, pageToken }, md) },
    {
      name: 'ListPrompts',
      call: (pageToken) => rpc(p, p.listPrompts, { filter: '', orderBy: '', showTotalSize: false, ...page, pageToken, llmClientId: '', tag: '', createdAfter: undefined, createdBefore: undefined, endUserId: '' }, md),
    },
    { name: 'ListHistory', call: (pageToken) => rpc(p, p.listHistory, { promptId, ...page, pageToken }, md) },
    { name: 'ListToolCalls', call: (pageToken) => rpc(p, p.listToolCalls, { promptId, ...page, pageToken }, md) },
    { name: 'ListPluginUsage', call: (pageToken) => rpc(p, p.listPluginUsage, { promptId, ...page, pageToken }, md) },
    { name: 'ListModelTypes', call: (pageToken) => g.listTypes('', 1, pageToken) },
    { name: 'ListSessions', call: (pageToken) => g.list('', '', 1, pageToken) },
    { name: 'ListSecondaryKeys', call: (pageToken) => g.keys(sessionId, 1, pageToken) },
  ];
});
test.after.always(async () => {
  await s?.stop();
});

const LONG = 'x'.repeat(5_000);

/** Values a forged cursor may hold in place of any of its own: each must be refused by every list. */
const refusedEverywhere: unknown[] = [
  'a\u0000',
  '\u0000',
  'lone \ud800 surrogate',
  LONG,
  1e308,
  -1e308,
  2 ** 53,
  -(2 ** 53),
  1.5,
  -1,
  Number.MAX_VALUE,
  null,
  true,
  {},
  [],
  { nested: { deeper: 1 } },
];
/** Values some lists may take as a plain (if useless) cursor, but that must never be INTERNAL. */
const refusedOrHarmless: unknown[] = ['', 'a', '2025-02-30 00:00:00+00', '9999-99-99 99:99:99+99', '------------------------------------', 0, 2 ** 31, 2 ** 53 - 1];

const decode = (token: string) => JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { l: string; f: string; c: unknown };
const encode = (doc: unknown) => Buffer.from(JSON.stringify(doc)).toString('base64url');

/** A real token of the list with its cursor (or one value of it) replaced by `value`. */
function* forgeries(token: string, value: unknown): Generator<string> {
  const doc = decode(token);
  if (doc.c !== null && typeof doc.c === 'object') {
    for (const key of Object.keys(doc.c)) yield encode({ ...doc, c: { ...doc.c, [key]: value } });
  } else {
    yield encode({ ...doc, c: value });
  }
}

async function outcome(call: Promise<unknown>): Promise<'ok' | ServiceError> {
  try {
    await call;
    return 'ok';
  } catch (err) {
    return err as ServiceError;
  }
}

function assertRefused(t: any, result: 'ok' | ServiceError, what: string): void {
  if (result === 'ok') return void t.fail(`${what}: accepted`);
  t.is(result.code, status.INVALID_ARGUMENT, `${what}: ${result.details}`);
  t.deepEqual(violatedFields(result), ['page_token'], what);
  t.true(result.details.length < 200, `${what}: a short message`);
}

test('forged page tokens: a cursor holding NUL, lone surrogates, long strings, huge or fractional numbers is INVALID_ARGUMENT page_token on every list', async (t) => {
  for (const list of lists) {
    const first = await list.call('');
    t.not(first.nextPageToken, '', `${list.name} has a second page`);
    for (const value of refusedEverywhere) {
      for (const forged of forgeries(first.nextPageToken, value)) {
        assertRefused(t, await outcome(list.call(forged)), `${list.name} with ${JSON.stringify(value)?.slice(0, 40)}`);
      }
    }
  }
});

test('forged page tokens: a cursor of the right type but an odd value is refused or serves a page, never INTERNAL', async (t) => {
  for (const list of lists) {
    const first = await list.call('');
    for (const value of refusedOrHarmless) {
      for (const forged of forgeries(first.nextPageToken, value)) {
        const result = await outcome(list.call(forged));
        if (result !== 'ok') assertRefused(t, result, `${list.name} with ${JSON.stringify(value)}`);
      }
    }
  }
});

test('forged page tokens: extra cursor keys, __proto__, another shape or an oversized token are INVALID_ARGUMENT page_token', async (t) => {
  for (const list of lists) {
    const first = await list.call('');
    const doc = decode(first.nextPageToken);
    const forged = [
      encode({ ...doc, c: typeof doc.c === 'object' ? { ...doc.c, extra: 1 } : { value: doc.c } }),
      encode({ ...doc, c: JSON.parse(`{"__proto__": {"polluted": 1}, "v": ${JSON.stringify(doc.c)}}`) }),
      encode([doc.l, doc.f, doc.c]),
      encode({ ...doc, pad: LONG }),
      `${first.nextPageToken}${'A'.repeat(2_000)}`,
      encode('just a string'),
      encode(null),
    ];
    for (const token of forged) assertRefused(t, await outcome(list.call(token)), `${list.name} with ${token.slice(0, 40)}`);
    t.false('polluted' in {});
    // The real token still works.
    t.truthy(await list.call(first.nextPageToken));
  }
});
