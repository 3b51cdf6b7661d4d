// `parley import --from smarter` end to end (smarter's prompt tables built in a scratch Postgres database with
// Django's column layout, the compiled CLI importing them into a running parley on the backends the
// environment selects, every imported prompt read back through the read RPCs), and ImportPrompt itself
// through the TS client and buf curl.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole, type ImportPromptRequest, type ImportPromptResponse, type PromptRecord } from '../../src/gen/parley/prompt/v1/prompt.js';
import { fromOpenAiMessage, toOpenAiMessage } from '../../src/prompt/messages.js';
import { createTenant, errorInfo, rpc, startTestServer, violatedFields, type Tenant, type TestServer } from '../helpers/harness.js';
import { createScratchDatabase, realPostgresUrl, testWhen } from '../helpers/backends.js';
import { parleyBin } from '../helpers/build.js';
import { bufCurl } from '../helpers/buf-curl.js';
import { buildSmarterSource, hex64, SMARTER_FIXTURE, SMARTER_ROLE_MESSAGES } from '../helpers/smarter-tables.js';

const hasPsql = spawnSync('psql', ['--version']).status === 0;
const withPostgres = testWhen(realPostgresUrl !== undefined, 'no Postgres server to hold the smarter tables: set DATABASE_URL or PARLEY_TEST_DATABASE_URL');

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

function run(bin: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const apiKeyOf = (t: Tenant) => String(t.md.get('authorization')[0]).replace(/^Bearer /, '');
const page = (promptId: string) => ({ promptId, pageSize: 100, pageToken: '' });

async function plugin(t: Tenant, name: string): Promise<string> {
  const r = await rpc(s.admin, s.admin.createPlugin, { accountId: t.accountId, name, description: '', requestId: '' }, s.adminMd);
  return r.plugin!.id;
}

withPostgres('parley import --from smarter: imports the smarter tables, refuses with reasons, reads back with original times; a rerun imports nothing', async (t) => {
  t.timeout(180_000);
  const bin = parleyBin();
  const source = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => source.drop());
  await buildSmarterSource(source.url);

  const tenant = await createTenant(s, 'hr');
  const { llmClient: sales } = await rpc(s.admin, s.admin.createLlmClient, { accountId: tenant.accountId, name: 'sales', description: '', requestId: '' }, s.adminMd);
  const weatherPlugin = await plugin(tenant, 'weather');
  const f = SMARTER_FIXTURE;
  // The converter of this build decides whether smarter's own roles can be kept (lossless messages make them so).
  const keepsSmarterRole = SMARTER_ROLE_MESSAGES.every((m) => isDeepStrictEqual(toOpenAiMessage(fromOpenAiMessage(m)), m));
  t.log(keepsSmarterRole ? 'this build keeps smarter roles and content parts' : 'this build refuses smarter roles (lossy)');

  const args = ['import', '--from', 'smarter', '--source', source.url, '--address', s.address, '--llm-client', `hr=${tenant.llmClientId}`, '--llm-client', `sales=${sales!.id}`];
  const first = await run(bin, args, { PARLEY_API_KEY: apiKeyOf(tenant) });
  const refusedCount = keepsSmarterRole ? 2 : 3;
  t.is(first.code, 1, first.stderr);
  t.regex(first.stdout, new RegExp(`^imported: ${keepsSmarterRole ? 3 : 2}$`, 'm'));
  t.regex(first.stdout, /^already present: 0$/m);
  t.regex(first.stdout, new RegExp(`^refused: ${refusedCount} \\(`, 'm'));
  t.regex(first.stdout, /refused prompt 3 .*unmapped-llm-client: its LLM client "legacy" is not mapped/);
  t.regex(first.stdout, /refused prompt 4 .*refused-by-server: INVALID_ARGUMENT: records\[0\]\.header\.session_key: /);
  if (!keepsSmarterRole) t.regex(first.stdout, /refused prompt 5 .*lossy-message: history \d+: a message \(role "smarter"\)/);

  // The weather prompt: every field and log, with smarter's times.
  const { prompt } = await rpc(s.prompt, s.prompt.getPrompt, { sessionKey: f.weather, id: undefined }, tenant.md);
  t.like(prompt, {
    name: 'weatherBot',
    description: 'Asks about the weather',
    version: '1.2.0',
    annotations: { team: 'ops', tier: '2' },
    ipAddress: '192.0.2.7',
    userAgent: 'Mozilla/5.0',
    url: 'https://example.com/chat',
    llmClientId: tenant.llmClientId,
    userProfileId: tenant.userProfileId,
    accountId: tenant.accountId,
    revision: 1 + 2 + 3 + 1,
  });
  t.deepEqual([...prompt!.tags].sort(), ['eu', 'vip']);
  t.is(prompt!.createTime!.toISOString(), '2024-03-01T10:00:00.123Z');
  t.is(prompt!.updateTime!.toISOString(), '2024-03-02T11:30:00.654Z');
  const history = (await rpc(s.prompt, s.prompt.listHistory, page(prompt!.id), tenant.md)).history;
  t.deepEqual(history.map((h) => h.createTime!.toISOString()), ['2024-03-01T10:00:01.500Z', '2024-03-01T10:00:02.250Z']);
  t.deepEqual(history[0]!.request, { model: 'gpt-4o', temperature: 0.5 });
  t.deepEqual(
    history[1]!.messages.map((m) => [m.role, m.content, m.toolCallId, m.toolCalls.map((c) => c.functionName)]),
    [
      [ChatRole.CHAT_ROLE_SYSTEM, 'You are helpful.', '', []],
      [ChatRole.CHAT_ROLE_USER, 'Weather in Oslo?', '', []],
      [ChatRole.CHAT_ROLE_ASSISTANT, '', '', ['get_weather']],
      [ChatRole.CHAT_ROLE_TOOL, '{"temp":3}', 'call_1', []],
      [ChatRole.CHAT_ROLE_ASSISTANT, 'It is 3 °C in Oslo.', '', []],
    ],
  );
  t.is(history[0]!.messages[1]!.name, 'ada');
  const calls = (await rpc(s.prompt, s.prompt.listToolCalls, page(prompt!.id), tenant.md)).toolCalls;
  // With its namesake plugin, without one, and with a plugin the account does not have (kept without).
  t.deepEqual(calls.map((c) => [c.functionName, c.pluginId, c.createTime!.toISOString()]), [
    ['get_weather', weatherPlugin, '2024-03-01T10:00:02.000Z'],
    ['get_time', '', '2024-03-01T10:00:04.000Z'],
    ['get_quote', '', '2024-03-01T10:00:05.000Z'],
  ]);
  t.deepEqual(calls[0]!.response, { temp: 3 });
  const usage = (await rpc(s.prompt, s.prompt.listPluginUsage, page(prompt!.id), tenant.md)).pluginUsage;
  t.deepEqual(usage.map((u) => [u.pluginId, u.inputText, u.createTime!.toISOString()]), [[weatherPlugin, 'Weather in Oslo?', '2024-03-01T10:00:01.000Z']]);

  // The other LLM client, mapped by name; annotations as an object.
  const second = (await rpc(s.prompt, s.prompt.getPrompt, { sessionKey: f.second, id: undefined }, tenant.md)).prompt!;
  t.like(second, { llmClientId: sales!.id, annotations: { owner: 'sales' }, revision: 1 });
  t.is(second.createTime!.toISOString(), '2024-04-01T00:00:00.000Z');
  // GetPromptHistory serves the imported latest messages as PromptHelper.history would.
  const snap = await rpc(s.prompt, s.prompt.getPromptHistory, { sessionKey: f.weather, id: undefined }, tenant.md);
  t.is(snap.promptHistory.length, 5);
  t.is(snap.revision, 7);

  if (keepsSmarterRole) {
    // Lossless messages: smarter's roles, content parts and a null content come back as stored, byte for byte.
    const p = (await rpc(s.prompt, s.prompt.getPrompt, { sessionKey: f.smarterRole, id: undefined }, tenant.md)).prompt!;
    const [entry] = (await rpc(s.prompt, s.prompt.listHistory, page(p.id), tenant.md)).history;
    const back = await bufCurl(s.address, 'parley.prompt.v1.PromptService/GetPromptHistory', { id: p.id }, `Bearer ${apiKeyOf(tenant)}`);
    t.is(entry!.messages.length, 4);
    t.is(back.promptHistory.length, 4);
    const roles = entry!.messages.map((m) => ChatRole[m.role]);
    t.deepEqual(roles, ['CHAT_ROLE_SMARTER', 'CHAT_ROLE_USER', 'CHAT_ROLE_ASSISTANT', 'CHAT_ROLE_SMARTER_ERROR']);
    const parts = entry!.messages[1] as unknown as { contentParts: unknown[] };
    t.is(parts.contentParts.length, 2);
    t.deepEqual(back.promptHistory[2].toolCalls.map((c: { functionName: string }) => c.functionName), ['get_weather']);
  }

  // A second run imports nothing twice.
  const again = await run(bin, args, { PARLEY_API_KEY: apiKeyOf(tenant) });
  t.is(again.code, 1, again.stderr);
  t.regex(again.stdout, /^imported: 0$/m);
  t.regex(again.stdout, new RegExp(`^already present: ${keepsSmarterRole ? 3 : 2}$`, 'm'));
  t.regex(again.stdout, new RegExp(`^refused: ${refusedCount} `, 'm'));
  t.is((await rpc(s.prompt, s.prompt.listHistory, page(prompt!.id), tenant.md)).history.length, 2);

  // A bad command line is exit 2, before anything is read.
  const bad = await run(bin, ['import', '--from', 'smarter', '--source', source.url, '--address', s.address], { PARLEY_API_KEY: apiKeyOf(tenant) });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /no LLM client/);
});

/** The README's smarter walk-through: its sh block, run in bash as pasted (psql, the import, buf curl). */
testWhen(realPostgresUrl !== undefined && hasPsql, 'no Postgres server or no psql for the README\'s smarter block: set DATABASE_URL or PARLEY_TEST_DATABASE_URL, install psql')(
  'the README\'s smarter migration runs as written: psql builds the source, the import prints its counts, GetPromptHistory shows the prompt',
  async (t) => {
    t.timeout(120_000);
    const bin = parleyBin();
    const readme = readFileSync('README.md', 'utf8');
    const section = readme.slice(readme.indexOf('## Migrating from smarter'));
    const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
    const source = await createScratchDatabase(realPostgresUrl!);
    t.teardown(() => source.drop());
    const tenant = await createTenant(s, 'hr');
    await plugin(tenant, 'weather');
    const script = `set -euo pipefail\nparley() { node ${JSON.stringify(bin)} "$@"; }\nnpx() { ${JSON.stringify(path.resolve('node_modules/.bin/buf'))} "\${@:2}"; }\n${block.replaceAll('127.0.0.1:50051', s.address)}`;
    // Asynchronously: the server under test runs in this process.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('bash', ['-c', script], {
        env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', SMARTER_URL: source.url, KEY: apiKeyOf(tenant), LLM_CLIENT_ID: tenant.llmClientId },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    t.is(r.status, 0, `${r.stderr}\n${r.stdout}`);
    t.regex(r.stdout, /^imported: 1\nalready present: 0\nrefused: 0$/m);
    const reply = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
    t.is(reply.prompt.createTime, '2024-03-01T10:00:00Z');
    t.is(reply.prompt.revision, '4');
    t.is(reply.promptHistory.length, 2);
    t.is(reply.toolCalls.length, 1);
    t.is(reply.pluginUsage.length, 1);
  },
);

// ---------------------------------------------------------------------------------------------------------
// ImportPrompt through the clients

function importRaw(tenant: Tenant, records: PromptRecord[]): Promise<ImportPromptResponse> {
  return new Promise((resolve, reject) => {
    const call = s.prompt.importPrompt(tenant.md, (err, res) => (err ? reject(err) : resolve(res!)));
    for (const record of records) call.write({ record } satisfies ImportPromptRequest);
    call.end();
  });
}

const at = (iso: string) => new Date(iso);
const headerOf = (tenant: Tenant, sessionKey: string) => ({
  header: {
    sessionKey,
    name: '',
    description: ' imported ',
    version: '',
    annotations: {},
    labels: { source: 'smarter' },
    tags: ['a'],
    ipAddress: '',
    userAgent: '',
    url: '',
    createTime: at('2023-01-01T00:00:00Z'),
    updateTime: at('2023-01-02T00:00:00Z'),
    endUserId: '',
    llmClientId: tenant.llmClientId,
  },
});
const historyRecord = (content: string, role = ChatRole.CHAT_ROLE_USER): PromptRecord => ({
  history: { request: { n: 1 }, response: undefined, messages: [{ role, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined }], createTime: at('2023-01-01T00:00:01Z') },
});
const trailer = (historyCount: number, toolCallCount = 0, pluginUsageCount = 0): PromptRecord => ({ trailer: { historyCount, toolCallCount, pluginUsageCount } });

test('ImportPrompt writes a prompt with its logs and times; a taken key is ALREADY_EXISTS; nothing is written when any record is refused', async (t) => {
  const tenant = await createTenant(s);
  const key = hex64('e5');
  const r = await importRaw(tenant, [headerOf(tenant, key), historyRecord('one'), historyRecord('two'), trailer(2)]);
  t.like(r, { historyCount: 2, toolCallCount: 0, pluginUsageCount: 0 });
  t.like(r.prompt, { sessionKey: key, description: 'imported', version: '1.0.0', revision: 3, userProfileId: tenant.userProfileId });
  t.truthy(r.prompt!.name);
  t.deepEqual({ ...r.prompt!.labels }, { source: 'smarter' }, 'labels travel with the header');
  t.is(r.prompt!.createTime!.toISOString(), '2023-01-01T00:00:00.000Z');
  const listed = await rpc(s.prompt, s.prompt.listHistory, page(r.prompt!.id), tenant.md);
  t.deepEqual(listed.history.map((h) => [h.revision, h.messages[0]!.content]), [[2, 'one'], [3, 'two']]);

  const taken = await t.throwsAsync(importRaw(tenant, [headerOf(tenant, key), trailer(0)]));
  t.is((taken as ServiceError).code, status.ALREADY_EXISTS);
  t.is(errorInfo(taken as ServiceError)?.reason, 'PROMPT_ALREADY_EXISTS');

  // An invalid message in the middle: INVALID_ARGUMENT naming the record and field, and nothing written.
  const other = hex64('f6');
  const bad = await t.throwsAsync(importRaw(tenant, [headerOf(tenant, other), historyRecord('ok'), historyRecord('', ChatRole.CHAT_ROLE_UNSPECIFIED), trailer(2)]));
  t.is((bad as ServiceError).code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(bad as ServiceError), ['records[2].history.messages[0].role']);
  const gone = await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { sessionKey: other, id: undefined }, tenant.md));
  t.is((gone as ServiceError).code, status.NOT_FOUND);

  // Counts that differ from what came (a cut stream), a missing trailer, a header out of place.
  const miscount = await t.throwsAsync(importRaw(tenant, [headerOf(tenant, other), historyRecord('ok'), trailer(3)]));
  t.deepEqual(violatedFields(miscount as ServiceError), ['records[2].trailer.history_count']);
  const noTrailer = await t.throwsAsync(importRaw(tenant, [headerOf(tenant, other), historyRecord('ok')]));
  t.deepEqual(violatedFields(noTrailer as ServiceError), ['records.trailer']);
  const noHeader = await t.throwsAsync(importRaw(tenant, [historyRecord('ok'), trailer(1)]));
  t.deepEqual(violatedFields(noHeader as ServiceError), ['records[0].header']);
  const badTime = await t.throwsAsync(importRaw(tenant, [{ header: { ...headerOf(tenant, other).header, updateTime: at('2022-01-01T00:00:00Z') } }, trailer(0)]));
  t.deepEqual(violatedFields(badTime as ServiceError), ['records[0].header.update_time']);
  await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { sessionKey: other, id: undefined }, tenant.md));
});

test('ImportPrompt is tenant-scoped: another account\'s LLM client or plugin is NOT_FOUND, and the import reads as NOT_FOUND to others', async (t) => {
  const a = await createTenant(s);
  const b = await createTenant(s);
  const bPlugin = await plugin(b, 'stocks');
  const key = hex64('17');
  const foreignClient = await t.throwsAsync(importRaw(a, [{ header: { ...headerOf(a, key).header, llmClientId: b.llmClientId } }, trailer(0)]));
  t.is((foreignClient as ServiceError).code, status.NOT_FOUND);
  t.is(errorInfo(foreignClient as ServiceError)?.reason, 'LLM_CLIENT_NOT_FOUND');
  const usage: PromptRecord = { pluginUsage: { pluginId: bPlugin, inputText: 'x', createTime: at('2023-01-01T00:00:02Z') } };
  const foreignPlugin = await t.throwsAsync(importRaw(a, [headerOf(a, key), usage, trailer(0, 0, 1)]));
  t.is(errorInfo(foreignPlugin as ServiceError)?.reason, 'PLUGIN_NOT_FOUND');
  const done = await importRaw(a, [headerOf(a, key), trailer(0)]);
  const hidden = await t.throwsAsync(rpc(s.prompt, s.prompt.getPrompt, { id: done.prompt!.id, sessionKey: undefined }, b.md));
  t.is((hidden as ServiceError).code, status.NOT_FOUND);
  // The key is taken deployment-wide: b's import of it is ALREADY_EXISTS, and writes nothing.
  const again = await t.throwsAsync(importRaw(b, [headerOf(b, key), trailer(0)]));
  t.is((again as ServiceError).code, status.ALREADY_EXISTS);
});

test('ImportPrompt through buf curl (JSON)', async (t) => {
  const tenant = await createTenant(s);
  const key = hex64('28');
  const h = headerOf(tenant, key).header;
  const body = [
    { record: { header: { ...h, createTime: '2023-05-01T08:00:00Z', updateTime: '2023-05-01T09:00:00Z' } } },
    { record: { history: { messages: [{ role: 'CHAT_ROLE_USER', content: 'hi' }], createTime: '2023-05-01T08:00:01Z' } } },
    { record: { trailer: { historyCount: 1 } } },
  ];
  const r = await bufCurl(s.address, 'parley.prompt.v1.PromptService/ImportPrompt', body.map((m) => JSON.stringify(m)).join('\n'), `Bearer ${apiKeyOf(tenant)}`);
  t.is(r.prompt.sessionKey, key);
  t.is(r.prompt.createTime, '2023-05-01T08:00:00Z');
  t.is(r.historyCount, '1');
});
