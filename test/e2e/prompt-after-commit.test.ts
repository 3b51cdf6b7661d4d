import test, { type ExecutionContext } from 'ava';
import type { Config } from '../../src/config.js';
import { createTenant, rpc, startTestServer, type TestServer } from '../helpers/harness.js';
import { hasRedisServer, PrivateRedis } from '../helpers/faults.js';

// The after-commit rule (src/after-commit.ts) end to end: once Postgres has committed an UpdatePrompt, a Redis
// that fails the cache fence and the bus message does not turn the answer into an error, and the next read
// still sees the committed prompt.
const withRedis = hasRedisServer ? test.serial : test.skip;
const note = hasRedisServer ? '' : ' [skipped here: redis-server is not installed]';

const openReq = { sessionKey: '', llmClientId: '', llmClientUrl: '', ipAddress: '', userAgent: '', url: '', requestId: '', endUserId: '' };

async function server(t: ExecutionContext, overrides: Partial<Config>): Promise<TestServer> {
  const s = await startTestServer(overrides);
  t.teardown(() => s.stop());
  return s;
}

withRedis(`prompt UpdatePrompt committed while Redis is down answers OK, and the next read is correct${note}`, async (t) => {
  const redis = await PrivateRedis.start(t);
  const s = await server(t, { redisUrl: redis.url });
  const tenant = await createTenant(s);
  const { prompt } = await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, llmClientId: tenant.llmClientId }, tenant.md);
  const read = async () => (await rpc(s.prompt, s.prompt.openPrompt, { labels: {}, ...openReq, sessionKey: prompt!.sessionKey }, tenant.md)).prompt!;
  await read(); // the cache now holds the prompt

  await redis.kill();
  const updated = await rpc(s.prompt, s.prompt.updatePrompt, { prompt: { ...prompt!, description: 'committed' }, updateMask: ['description'], requestId: '' }, tenant.md);
  t.true(updated.changed, 'the committed write answers OK');
  t.is(updated.prompt!.revision, prompt!.revision + 1);
  t.like(await read(), { description: 'committed', revision: prompt!.revision + 1 }, 'read with Redis down');

  await redis.start();
  t.like(await read(), { description: 'committed', revision: prompt!.revision + 1 }, 'read with Redis back');
});
