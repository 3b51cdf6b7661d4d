import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { status, type ServiceError } from '@grpc/grpc-js';
import { promptUseCases } from '../../src/app.js';
import { migrate, openDb } from '../../src/storage/db.js';
import { decodePromptEvent, promptChannel } from '../../src/prompt/events.js';
import { promptCacheKey } from '../../src/prompt/rules.js';
import { createScratchDatabase, env, uniqueName } from '../helpers/backends.js';
import { createTenant, rpc, startTestServer, type Tenant, type TestServer } from '../helpers/harness.js';
import { parleyBin } from '../helpers/build.js';

const run = promisify(execFile);
const DAY = 86_400_000;

let s: TestServer;
test.before(async () => {
  s = await startTestServer();
});
test.after.always(async () => {
  await s?.stop();
});

const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };
const open = async (t: Tenant) => (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: t.llmClientId }, t.md)).prompt!;
const append = (t: Tenant, promptId: string, requestId = '') =>
  rpc(s.prompt, s.prompt.appendHistory, { promptId, request: { model: 'm' }, response: undefined, messages: [], requestId }, t.md);
const idleSince = (ids: string[], daysAgo: number) =>
  s.app.db('prompts').whereIn('id', ids).update({ last_activity_at: new Date(Date.now() - daysAgo * DAY), created_at: new Date(Date.now() - daysAgo * DAY) });

// Serial: the purge sweeps the whole database, so no other test may create idle prompts meanwhile.
test.serial('purge deletes idle prompts with their logs in batches, keeps active ones and expires old request ids', async (t) => {
  const a = await createTenant(s);
  const idle = [await open(a), await open(a), await open(a)];
  const active = await open(a);
  const revived = await open(a);
  await append(a, idle[0]!.id);
  await append(a, idle[0]!.id);
  await append(a, active.id);
  await idleSince([...idle.map((p) => p.id), revived.id], 40);
  // A log write is activity: an old prompt written to today is not idle.
  await append(a, revived.id);
  const oldRid = randomUUID();
  const newRid = randomUUID();
  await append(a, active.id, oldRid);
  await append(a, active.id, newRid);
  await s.app.db('request_ids').where({ request_id: oldRid }).update({ created_at: new Date(Date.now() - 25 * 3600_000) });
  for (const p of idle) t.truthy((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value);
  const events: string[] = [];
  const sub = await s.app.store.bus.subscribe(promptChannel(idle[0]!.id), (m) => events.push(decodePromptEvent(m)?.type ?? 'not an event'));

  const report = await promptUseCases(s.app.db, s.app.store, s.app.config).purgeIdle({ olderThanMs: 30 * DAY, batchSize: 2 });
  t.deepEqual(report, { prompts: 3, history: 2, toolCalls: 0, pluginUsage: 0, batches: 2, requestIds: 1 });

  for (const p of idle) {
    const e = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.getPrompt, { id: p.id, sessionKey: '' }, a.md));
    t.is(e?.code, status.NOT_FOUND);
    t.is((await s.app.store.kv.readCached(promptCacheKey(p.sessionKey))).value, null, 'purged sessions leave the cache');
  }
  const gone = await t.throwsAsync<ServiceError>(rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, sessionKey: idle[1]!.sessionKey }, a.md));
  t.is(gone?.code, status.NOT_FOUND);
  const [row] = (await s.app.db("prompt_history").whereIn("prompt_id", idle.map((p) => p.id)).count({ n: "*" })) as Array<{ n: number }>;
  t.is(Number(row!.n), 0);
  for (const p of [active, revived]) {
    const h = await rpc(s.prompt, s.prompt.listHistory, { promptId: p.id, pageSize: 0, pageToken: '' }, a.md);
    t.true(h.history.length > 0);
  }
  t.deepEqual((await s.app.db('request_ids').whereIn('request_id', [oldRid, newRid]).pluck('request_id')) as string[], [newRid]);
  for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(events, ['prompt_deleted']);
  await sub.close();

  const again = await promptUseCases(s.app.db, s.app.store, s.app.config).purgeIdle({ olderThanMs: 30 * DAY });
  t.is(again.prompts, 0);
});

test.serial('`parley purge --older-than 30d` purges through the CLI', async (t) => {
  const scratch = env.databaseUrl ? await createScratchDatabase(env.databaseUrl) : undefined;
  const dataDir = scratch ? undefined : await mkdtemp(path.join(os.tmpdir(), 'parley-purge-'));
  try {
    const db = openDb({ databaseUrl: scratch?.url, dataDir: dataDir ?? 'memory' });
    await migrate(db);
    const account = randomUUID();
    const profile = randomUUID();
    const client = randomUUID();
    await db('accounts').insert({ id: account, account_number: '1111-2222-3333' });
    await db('user_profiles').insert({ id: profile, account_id: account, username: 'ada' });
    await db('llm_clients').insert({ id: client, account_id: account, name: 'hr' });
    const prompt = (key: string, daysIdle: number) => ({
      id: randomUUID(),
      account_id: account,
      user_profile_id: profile,
      llm_client_id: client,
      name: 'p',
      session_key: key.repeat(64),
      last_activity_at: new Date(Date.now() - daysIdle * DAY),
    });
    const old = prompt('a', 31);
    await db('prompts').insert([old, prompt('b', 29)]);
    await db('prompt_history').insert({ prompt_id: old.id });
    await db.destroy();

    const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, PARLEY_LOG_LEVEL: 'silent' };
    if (scratch) childEnv.DATABASE_URL = scratch.url;
    else childEnv.PARLEY_DATA_DIR = dataDir;
    if (env.redisUrl) Object.assign(childEnv, { REDIS_URL: env.redisUrl, PARLEY_REDIS_PREFIX: `${uniqueName('parley_t')}:` });
    const bin = parleyBin();
    const out = await run(process.execPath, [bin, 'purge', '--older-than', '30d', '--batch-size', '10'], { env: childEnv });
    t.regex(out.stdout, /^purged 1 prompts \(1 history entries, 0 tool calls, 0 plugin usages\), 0 genie sessions and 0 session tombstones in 1 batches; expired 0 request ids$/m);

    const bad = await t.throwsAsync(run(process.execPath, [bin, 'purge'], { env: childEnv }));
    t.is((bad as { code?: number }).code, 2);
    t.regex((bad as { stderr?: string }).stderr ?? '', /--older-than/);

    const check = openDb({ databaseUrl: scratch?.url, dataDir: dataDir ?? 'memory' });
    t.deepEqual((await check('prompts').pluck('session_key')) as string[], ['b'.repeat(64)]);
    await check.destroy();
  } finally {
    await scratch?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }
});
