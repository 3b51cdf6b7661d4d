import type { ExecutionContext } from 'ava';
import type { Config } from '../../src/config.js';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { ChatRole, type WatchPromptResponse } from '../../src/gen/parley/prompt/v1/prompt.js';
import { createScratchDatabase, realPostgresUrl, realRedisUrl, redisClusterUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { eventually } from '../helpers/eventually.js';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { Watcher } from '../helpers/watch.js';
import { genie, modelType } from '../genie/fixtures.js';

/**
 * Two parley replicas on one Postgres database and one Redis (one key prefix): a watcher on one sees writes made
 * through the other, and a cached read on one never returns a version older than a write acknowledged by the
 * other. Once on a single Redis (plain pub/sub) and once on a Redis Cluster (sharded pub/sub, copies and fences
 * spread over the masters).
 */
const backends: Array<{ name: string; redis: Pick<Config, 'redisUrl' | 'redisCluster'>; enabled: boolean; missing: string }> = [
  { name: 'redis', redis: { redisUrl: realRedisUrl, redisCluster: undefined }, enabled: realRedisUrl !== undefined, missing: 'set REDIS_URL or PARLEY_TEST_REDIS_URL' },
  {
    name: 'redis cluster',
    redis: { redisUrl: redisClusterUrl, redisCluster: { seeds: [] } },
    enabled: redisClusterUrl !== undefined,
    missing: 'set PARLEY_TEST_REDIS_CLUSTER_URL (scripts/redis-cluster.sh start)',
  },
];

const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };
const loop = modelType({
  name: 'loop',
  jsonSchema: undefined,
  stateMachine: { states: ['a'], initialState: 'a', transitions: [{ fromState: 'a', eventName: 'go', toState: 'a', actor: Actor.ACTOR_USER }] },
});

async function replicas(t: ExecutionContext, redis: Pick<Config, 'redisUrl' | 'redisCluster'>): Promise<[TestServer, TestServer]> {
  const db = await createScratchDatabase(realPostgresUrl!);
  t.teardown(() => db.drop());
  const shared = { databaseUrl: db.url, ...redis, redisPrefix: `${uniqueName('parley_t')}:` };
  const a = await startTestServer(shared);
  t.teardown(() => a.stop());
  const b = await startTestServer(shared);
  t.teardown(() => b.stop());
  return [a, b];
}

for (const backend of backends) {
  const test = testWhen(
    backend.enabled && realPostgresUrl !== undefined,
    realPostgresUrl === undefined ? 'set DATABASE_URL or PARLEY_TEST_DATABASE_URL' : backend.missing,
    false,
    true,
  );

  test(`${backend.name}: WatchPrompt and WatchSession on one replica see writes made through the other`, async (t) => {
    const [a, b] = await replicas(t, backend.redis);
    const tenant = await createTenant(a);
    const prompt = (await rpc(b.prompt, b.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md)).prompt!;
    const promptUpdates: WatchPromptResponse[] = [];
    const promptWatch = a.prompt.watchPrompt({ promptId: prompt.id, afterRevision: prompt.revision }, tenant.md);
    promptWatch.on('data', (r: WatchPromptResponse) => promptUpdates.push(r));
    promptWatch.on('error', () => {});
    t.teardown(() => promptWatch.cancel());
    await eventually(() => promptUpdates.some((r) => r.update?.caughtUp), 'the prompt watcher on replica a to catch up');

    const g = genie(b, tenant);
    await g.register(loop);
    const { sessionId } = await g.create('loop', {});
    const sessionWatch = new Watcher(a.genie, tenant.md, sessionId, 1);
    t.teardown(() => sessionWatch.cancel());
    await sessionWatch.until((w) => w.caughtUp() !== undefined, 'the session watcher on replica a to catch up');

    const message = { role: ChatRole.CHAT_ROLE_USER, content: 'through b', name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined };
    await rpc(b.prompt, b.prompt.appendHistory, { promptId: prompt.id, request: {}, response: {}, messages: [message], requestId: '' }, tenant.md);
    const { revision } = await g.send(sessionId, 'go');

    await eventually(() => promptUpdates.some((r) => r.update?.history?.messages[0]?.content === 'through b'), 'the history appended on b to reach the watcher on a');
    await sessionWatch.until((w) => w.revisions().includes(revision), `revision ${revision} (written on b) to reach the watcher on a`);
    t.deepEqual(sessionWatch.revisions(), [revision]);
  });

  test(`${backend.name}: a cached read on one replica never returns a version older than a write acknowledged by the other`, async (t) => {
    const [a, b] = await replicas(t, backend.redis);
    const tenant = await createTenant(a);
    const prompt = (await rpc(b.prompt, b.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md)).prompt!;
    const g = genie(b, tenant);
    await g.register(loop);
    const { sessionId } = await g.create('loop', {});
    const readOnA = async () => ({
      revision: (await rpc(a.genie, a.genie.getSession, { sessionId, revision: undefined }, tenant.md)).session!.revision,
      description: (await rpc(a.prompt, a.prompt.openPrompt, { labels: {}, ...openReq, sessionKey: prompt.sessionKey }, tenant.md)).prompt!.description,
    });
    t.deepEqual(await readOnA(), { revision: 1, description: '' }, 'the first read fills replica a’s cache');
    for (let i = 1; i <= 10; i++) {
      const { revision } = await g.send(sessionId, 'go');
      const description = `version ${i}`;
      await rpc(b.prompt, b.prompt.updatePrompt, { prompt: { ...prompt, description }, updateMask: ['description'], requestId: '' }, tenant.md);
      t.deepEqual(await readOnA(), { revision, description }, `write ${i}, acknowledged by b, read on a`);
      t.deepEqual(await readOnA(), { revision, description }, `write ${i}, read again on a (from its cache)`);
    }
  });
}
