import { HealthCheckResponse_ServingStatus as Serving } from '../../src/gen/grpc/health/v1/health.js';
import { rpc, startTestServer } from '../helpers/harness.js';
import { testWhen } from '../helpers/backends.js';
import { eventually } from '../helpers/eventually.js';
import { hasRedisServer, PrivateRedis } from '../helpers/faults.js';

const withRedis = testWhen(hasRedisServer, 'redis-server is not installed');

// The monitor probes every 500 ms with a 1 s probe timeout, so health follows Redis within about 1.5 s on an
// idle machine; the test waits on the condition (a busy machine only makes it slower) and logs the time.
withRedis('health turns NOT_SERVING when Redis stops and SERVING once it is back', async (t) => {
  const redis = await PrivateRedis.start(t);
  const s = await startTestServer({ redisUrl: redis.url });
  t.teardown(() => s.stop());
  const status = async () => (await rpc(s.health, s.health.check, { service: '' })).status;
  t.is(await status(), Serving.SERVING);

  let since = Date.now();
  await redis.kill();
  await eventually(async () => (await status()) === Serving.NOT_SERVING, 'health to say NOT_SERVING');
  t.log(`NOT_SERVING after ${Date.now() - since} ms`);
  t.deepEqual(s.app.health.down(), ['redis']);

  since = Date.now();
  await redis.start();
  await eventually(async () => (await status()) === Serving.SERVING, 'health to say SERVING again');
  t.log(`SERVING again after ${Date.now() - since} ms`);
});
