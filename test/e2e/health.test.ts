import test from 'ava';
import { HealthCheckResponse_ServingStatus as Serving } from '../../src/gen/grpc/health/v1/health.js';
import { rpc, startTestServer } from '../helpers/harness.js';
import { testWhen } from '../helpers/backends.js';
import { freePort, hasRedisServer, startRedis } from '../helpers/processes.js';

const withRedis = testWhen(hasRedisServer, 'redis-server is not installed');

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<number | undefined> {
  const started = Date.now();
  while (Date.now() - started <= timeoutMs) {
    if (await check()) return Date.now() - started;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

withRedis('health turns NOT_SERVING within 2 s of Redis stopping and SERVING once it is back', async (t) => {
  const port = await freePort();
  let redis = await startRedis(port);
  const s = await startTestServer({ redisUrl: `redis://127.0.0.1:${port}` });
  try {
    const status = async () => (await rpc(s.health, s.health.check, { service: '' })).status;
    t.is(await status(), Serving.SERVING);

    redis.kill('SIGKILL');
    const down = await waitFor(async () => (await status()) === Serving.NOT_SERVING, 2_000);
    t.not(down, undefined, 'health still said SERVING 2 s after Redis stopped');
    t.log(`NOT_SERVING after ${down} ms`);
    t.deepEqual(s.app.health.down(), ['redis']);

    redis = await startRedis(port);
    const up = await waitFor(async () => (await status()) === Serving.SERVING, 5_000);
    t.not(up, undefined, 'health did not return to SERVING after Redis came back');
    t.log(`SERVING again after ${up} ms`);
  } finally {
    await s.stop();
    redis.kill('SIGKILL');
  }
});
