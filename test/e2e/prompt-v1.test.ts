import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { ChatRole, GetPromptHistoryResponse, ListHistoryResponse, type Prompt } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { expectError } from '../helpers/errors.js';
import { env } from '../helpers/backends.js';
import { bufCurl } from '../helpers/buf-curl.js';

// Contracts v1 of PromptService: bounded writes and reads, JSON update masks, and the error reasons not
// covered beside their RPCs in prompt.test.ts.

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const MiB = 1024 * 1024;

let s: TestServer;
let tenant: Tenant;
test.before(async () => {
  s = await startTestServer();
  tenant = await createTenant(s);
});
test.after.always(async () => {
  await s?.stop();
});

const openReq = { sessionKey: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '', labels: {} };
const open = async (t: Tenant = tenant): Promise<Prompt> => (await rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientId: t.llmClientId }, t.md)).prompt!;
const message = (content: string) => ({ role: ChatRole.CHAT_ROLE_USER, content, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined });
const append = (promptId: string, content: string, extra: Record<string, unknown> = {}) =>
  rpc(s.prompt, s.prompt.appendHistory, { promptId, request: {}, response: {}, messages: [message(content)], requestId: '', ...extra }, tenant.md);
const toolCall = (promptId: string, functionArgs: string) =>
  rpc(s.prompt, s.prompt.recordToolCall, { promptId, pluginId: '', functionName: 'f', functionArgs, request: {}, response: {}, requestId: '' }, tenant.md);
const rows = async (table: string, promptId: string) => Number((await s.app.db(table).where({ prompt_id: promptId }).count({ n: '*' }))[0]!.n);

test('a 10 MiB AppendHistory is INVALID_ARGUMENT FIELD_TOO_LARGE, writes nothing, and GetPromptHistory keeps working', async (t) => {
  const p = await open();
  await append(p.id, 'small');
  const huge = await expectError(t, append(p.id, 'x'.repeat(10 * MiB)), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  t.deepEqual(huge.badRequest?.fieldViolations.map((v) => v.field), ['messages']);
  t.regex(huge.badRequest!.fieldViolations[0]!.description, /at most 1 MiB/);
  const inRequest = await expectError(t, append(p.id, 'ok', { request: { blob: 'y'.repeat(2 * MiB) } }), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  t.deepEqual(inRequest.badRequest?.fieldViolations.map((v) => v.field), ['request']);
  // Just under the limit is accepted.
  const near = await append(p.id, 'z'.repeat(MiB - 1024));
  t.true(near.sizeBytes > MiB - 1024 && near.sizeBytes <= MiB + 64, `size_bytes ${near.sizeBytes}`);
  t.is(await rows('prompt_history', p.id), 2, 'the refused entries were not written');
  const h = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id }, tenant.md);
  t.is(h.revision, 3, 'created at 1, two entries');
  t.is(h.latestHistory?.id, near.id);
});

test('ListHistory stops a page before 3 MiB and GetPromptHistory cuts its logs short, saying so', async (t) => {
  t.timeout(120_000);
  const p = await open();
  const big = 'b'.repeat(900 * 1024);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push((await append(p.id, big)).id);
  const first = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 10, pageToken: '' }, tenant.md);
  t.is(first.history.length, 3, 'the fourth entry would pass 3 MiB');
  t.truthy(first.nextPageToken);
  t.true(ListHistoryResponse.encode(first).finish().length < 3 * MiB);
  const second = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 10, pageToken: first.nextPageToken }, tenant.md);
  t.deepEqual([...first.history, ...second.history].map((e) => e.id), ids);
  t.is(second.nextPageToken, '');

  for (let i = 0; i < 3; i++) await toolCall(p.id, big);
  const h = await rpc(s.prompt, s.prompt.getPromptHistory, { id: p.id }, tenant.md);
  t.true(h.truncated);
  t.true(h.toolCalls.length < 3, `${h.toolCalls.length} tool calls`);
  t.true(GetPromptHistoryResponse.encode(h).finish().length < 3 * MiB);
  const calls = await rpc(s.prompt, s.prompt.listToolCalls, { promptId: p.id, pageSize: 0, pageToken: '' }, tenant.md);
  t.is(calls.toolCalls.length, 3, 'the list has them all (3 × 0.9 MiB fits a page)');
});

test('OpenPrompt, UpdatePrompt and WatchPrompt error reasons', async (t) => {
  const unknownKey = 'a'.repeat(64);
  await expectError(t, rpc(s.prompt, s.prompt.openPrompt, { ...openReq, sessionKey: unknownKey }, tenant.md), status.NOT_FOUND, 'PROMPT_SESSION_NOT_FOUND');
  const client = await expectError(t, rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientId: randomUUID() }, tenant.md), status.NOT_FOUND, 'LLM_CLIENT_NOT_FOUND');
  t.is(client.resourceInfo?.resourceType, 'LLM client');
  await expectError(t, rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientUrl: 'https://nope.0000-0000-0000.api.example.com/' }, tenant.md), status.NOT_FOUND, 'LLM_CLIENT_NOT_FOUND');
  await expectError(t, rpc(s.prompt, s.prompt.openPrompt, { ...openReq, llmClientUrl: `https://hr.${'1'.repeat(3000)}/` }, tenant.md), status.INVALID_ARGUMENT, 'FIELD_TOO_LARGE');
  await expectError(t, rpc(s.prompt, s.prompt.openPrompt, openReq, tenant.md), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');

  const p = await open();
  const rid = randomUUID();
  const update = (description: string, requestId = rid) =>
    rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...p, description }, updateMask: ['description'], requestId }, tenant.md);
  const first = await update('one');
  t.deepEqual(await update('one'), first, 'a retry replays the first answer');
  const reused = await expectError(t, update('two'), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED');
  t.deepEqual(reused.badRequest?.fieldViolations.map((v) => v.field), ['request_id']);
  await expectError(t, rpc(s.prompt, s.prompt.deletePrompt, { id: p.id, requestId: rid }, tenant.md), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED');
  await expectError(t, append(p.id, 'x', { requestId: rid }), status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED');
  t.is(await rows('prompt_history', p.id), 0, 'a reused id on another RPC writes nothing');

  const watch = s.prompt.watchPrompt({ promptId: p.id, afterRevision: 99 }, tenant.md);
  watch.on('data', () => {});
  await expectError(t, new Promise((resolve, reject) => (watch.on('error', reject), watch.on('end', resolve))), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
});

/** buf curl with a JSON body; resolves to the parsed response or error body whatever the exit code. */
async function curl(method: string, body: unknown): Promise<any> {
  return bufCurl(s.address, `parley.prompt.v1.PromptService/${method}`, body, tenant.md.get('authorization')[0] as string);
}

test('UpdatePrompt from JSON (buf curl): camelCase mask paths arrive snake_case, an output-only one is UPDATE_MASK_INVALID, no mask means the fields sent', async (t) => {
  const p = await open();
  const ok = await curl('UpdatePrompt', { prompt: { id: p.id, description: 'from JSON', tags: ['json'] }, updateMask: 'description,tags', expectedRevision: String(p.revision) });
  t.is(ok.changed, true, JSON.stringify(ok));
  t.is(ok.prompt.description, 'from JSON');
  t.deepEqual(ok.prompt.tags, ['json']);
  t.is(ok.prompt.revision, String(p.revision + 1), 'int64 as a JSON string');
  const again = await curl('UpdatePrompt', { prompt: { id: p.id, description: 'from JSON' }, updateMask: 'description' });
  t.is(again.changed, undefined, 'changed: false (JSON omits false)');
  const bad = await curl('UpdatePrompt', { prompt: { id: p.id }, updateMask: 'sessionKey' });
  t.is(bad.code, 'invalid_argument');
  t.regex(bad.message, /update_mask: path "session_key" is output only or immutable/);
  const implied = await curl('UpdatePrompt', { prompt: { id: p.id, name: 'viaJson' } });
  t.is(implied.prompt.name, 'viaJson');
  t.is(implied.prompt.description, 'from JSON', 'fields not sent are kept');
  const mismatch = await curl('UpdatePrompt', { prompt: { id: p.id, name: 'late' }, updateMask: 'name', expectedRevision: '1' });
  t.is(mismatch.code, 'aborted');
  // Go's protojson (inside buf curl) refuses `*` before sending: a FieldMask path must be an identifier in JSON.
  const star = await curl('UpdatePrompt', { prompt: { id: p.id }, updateMask: '*' });
  t.regex(star.clientError ?? '', /invalid path: "\*"/);
});

const pythonReady = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import grpc, google.protobuf.json_format']).status === 0;
if (!pythonReady && env.ci) throw new Error('CI needs python3-grpcio and python3-protobuf (Debian packages) for the Python client tests');

(pythonReady ? test : test.skip)('UpdatePrompt from JSON (Python json_format): mask * replaces all five fields, a camelCase mask applies', async (t) => {
  const p = await open();
  const key = (tenant.md.get('authorization')[0] as string).replace(/^Bearer /, '');
  const call = async (body: unknown) => {
    const { stdout } = await run(PYTHON, ['test/python/prompt_json_update.py', 'src/gen/parley.binpb', s.address, key, JSON.stringify(body)], { encoding: 'utf8', timeout: 60_000 });
    return JSON.parse(stdout);
  };
  await call({ prompt: { id: p.id, description: 'before', tags: ['a'], annotations: { owner: 'hr' } }, updateMask: 'description,tags,annotations' });
  const star = await call({ prompt: { id: p.id, name: 'starred', version: '2.0.0' }, updateMask: '*' });
  t.is(star.changed, true, JSON.stringify(star));
  t.is(star.prompt.name, 'starred');
  t.is(star.prompt.version, '2.0.0');
  t.is(star.prompt.description, undefined, '* replaces: the description not sent is cleared');
  t.is(star.prompt.tags, undefined);
  t.is(star.prompt.annotations, undefined);
  const camel = await call({ prompt: { id: p.id, description: 'camel' }, updateMask: 'description', expectedRevision: star.prompt.revision });
  t.is(camel.prompt.description, 'camel');
  const output = await call({ prompt: { id: p.id }, updateMask: 'createTime' });
  t.is(output.code, 'INVALID_ARGUMENT');
  t.regex(output.message, /"create_time"/);
});
