import test from 'ava';
import { ConfigError, loadConfig, parseDuration } from '../../src/config.js';

test('defaults select the embedded backends on 127.0.0.1:50051', (t) => {
  const c = loadConfig({});
  t.is(c.listen, '127.0.0.1:50051');
  t.is(c.databaseUrl, undefined);
  t.is(c.redisUrl, undefined);
  t.is(c.dataDir, '.parley');
  t.is(c.logLevel, 'info');
  t.is(c.shutdownGraceMs, 10_000);
});

test('every bad variable is named, and secret values are never echoed', (t) => {
  const e = t.throws(
    () =>
      loadConfig({
        PARLEY_LISTEN: 'nowhere',
        DATABASE_URL: 'mysql://u:hunter2@db/x',
        REDIS_URL: 'http://r',
        PARLEY_ADMIN_TOKEN: 'short-secret',
        PARLEY_LOG_LEVEL: 'loud',
      }),
    { instanceOf: ConfigError },
  );
  for (const name of ['PARLEY_LISTEN', 'DATABASE_URL', 'REDIS_URL', 'PARLEY_ADMIN_TOKEN', 'PARLEY_LOG_LEVEL']) {
    t.true(e!.message.includes(name), `${name} is not named in: ${e!.message}`);
  }
  t.false(e!.message.includes('hunter2'));
  t.false(e!.message.includes('short-secret'));
});

test('empty variables count as unset', (t) => {
  t.is(loadConfig({ DATABASE_URL: '', PARLEY_LISTEN: '' }).listen, '127.0.0.1:50051');
});

test('durations parse in every unit', (t) => {
  t.is(parseDuration('250ms'), 250);
  t.is(parseDuration('30s'), 30_000);
  t.is(parseDuration('10m'), 600_000);
  t.is(parseDuration('24h'), 86_400_000);
  t.is(parseDuration('30d'), 2_592_000_000);
  t.throws(() => parseDuration('3 days'));
});

test('a real server is selected by URL', (t) => {
  const c = loadConfig({ DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test', REDIS_URL: 'redis://127.0.0.1:6379', PARLEY_LISTEN: '0.0.0.0:6000' });
  t.is(c.databaseUrl, 'postgres://postgres@127.0.0.1:5432/test');
  t.is(c.redisUrl, 'redis://127.0.0.1:6379');
  t.is(c.listen, '0.0.0.0:6000');
});

test('per-account limits have generous defaults and read their variables', (t) => {
  const d = loadConfig({});
  t.is(d.accountMaxStreams, 1000);
  t.is(d.accountMaxUtteranceBytes, 32 * 1024 * 1024);
  t.is(d.maxUtteranceBytes, 1024 * 1024);
  t.is(d.clientStreamIdleMs, 300_000);
  t.is(d.accountRequestRate, 1000);
  t.is(d.accountRequestBurst, 2000);
  t.is(d.maxStreamsPerConnection, 1000);
  const c = loadConfig({
    PARLEY_ACCOUNT_MAX_STREAMS: '50',
    PARLEY_ACCOUNT_MAX_UTTERANCE_BYTES: '1048576',
    PARLEY_MAX_UTTERANCE_BYTES: '65536',
    PARLEY_CLIENT_STREAM_IDLE: '30s',
    PARLEY_ACCOUNT_RATE: '2.5',
    PARLEY_ACCOUNT_BURST: '10',
    PARLEY_MAX_STREAMS_PER_CONNECTION: '100',
  });
  t.deepEqual(
    [c.accountMaxStreams, c.accountMaxUtteranceBytes, c.maxUtteranceBytes, c.clientStreamIdleMs, c.accountRequestRate, c.accountRequestBurst, c.maxStreamsPerConnection],
    [50, 1048576, 65536, 30_000, 2.5, 10, 100],
  );
});

test('a limit that would refuse everything is a configuration error naming its variable', (t) => {
  const e = t.throws(
    () =>
      loadConfig({
        PARLEY_ACCOUNT_MAX_STREAMS: '0',
        PARLEY_ACCOUNT_MAX_UTTERANCE_BYTES: 'lots',
        PARLEY_MAX_UTTERANCE_BYTES: '10',
        PARLEY_CLIENT_STREAM_IDLE: '0ms',
        PARLEY_ACCOUNT_RATE: '0',
        PARLEY_ACCOUNT_BURST: '1.5',
        PARLEY_MAX_STREAMS_PER_CONNECTION: '-1',
      }),
    { instanceOf: ConfigError },
  );
  for (const name of [
    'PARLEY_ACCOUNT_MAX_STREAMS',
    'PARLEY_ACCOUNT_MAX_UTTERANCE_BYTES',
    'PARLEY_MAX_UTTERANCE_BYTES',
    'PARLEY_CLIENT_STREAM_IDLE',
    'PARLEY_ACCOUNT_RATE',
    'PARLEY_ACCOUNT_BURST',
    'PARLEY_MAX_STREAMS_PER_CONNECTION',
  ]) {
    t.true(e!.message.includes(name), `${name} is not named in: ${e!.message}`);
  }
});

test('TLS is off by default and on with a certificate and its key; a client CA makes it mutual', (t) => {
  t.is(loadConfig({}).tls, undefined);
  t.deepEqual(loadConfig({ PARLEY_TLS_CERT: '/etc/parley/server.pem', PARLEY_TLS_KEY: '/etc/parley/server.key' }).tls, {
    certFile: '/etc/parley/server.pem',
    keyFile: '/etc/parley/server.key',
    clientCaFile: undefined,
    reloadIntervalMs: 60_000,
  });
  const mutual = loadConfig({ PARLEY_TLS_CERT: 'server.pem', PARLEY_TLS_KEY: 'server.key', PARLEY_TLS_CLIENT_CA: 'ca.pem', PARLEY_TLS_RELOAD_INTERVAL: '0s' }).tls;
  t.is(mutual?.clientCaFile, 'ca.pem');
  t.is(mutual?.reloadIntervalMs, 0, '0s: reload on SIGHUP only');
});

test('a TLS certificate without its key, a key without its certificate, or a client CA alone is a configuration error naming the missing variable', (t) => {
  const certOnly = t.throws(() => loadConfig({ PARLEY_TLS_CERT: 'server.pem' }), { instanceOf: ConfigError });
  t.deepEqual(certOnly!.problems, ['PARLEY_TLS_KEY: must be set with PARLEY_TLS_CERT (the private key of that certificate)']);
  const keyOnly = t.throws(() => loadConfig({ PARLEY_TLS_KEY: 'server.key' }), { instanceOf: ConfigError });
  t.deepEqual(keyOnly!.problems, ['PARLEY_TLS_CERT: must be set with PARLEY_TLS_KEY (the certificate of that key)']);
  const caOnly = t.throws(() => loadConfig({ PARLEY_TLS_CLIENT_CA: 'ca.pem' }), { instanceOf: ConfigError });
  t.deepEqual(caOnly!.problems, ['PARLEY_TLS_CLIENT_CA: needs PARLEY_TLS_CERT and PARLEY_TLS_KEY (mutual TLS is TLS first)']);
  const interval = t.throws(() => loadConfig({ PARLEY_TLS_RELOAD_INTERVAL: 'hourly' }), { instanceOf: ConfigError });
  t.regex(interval!.message, /PARLEY_TLS_RELOAD_INTERVAL: must be a duration/);
  t.false(interval!.message.includes('hourly'), 'the value is not echoed');
  const busy = t.throws(() => loadConfig({ PARLEY_TLS_RELOAD_INTERVAL: '10ms' }), { instanceOf: ConfigError });
  t.deepEqual(busy!.problems, ['PARLEY_TLS_RELOAD_INTERVAL: must be 0s (reload on SIGHUP only) or at least 1s']);
});

test('metrics: PARLEY_METRICS_LISTEN is off by default and takes host:port', (t) => {
  t.is(loadConfig({}).metricsListen, undefined);
  t.is(loadConfig({ PARLEY_METRICS_LISTEN: '0.0.0.0:9464' }).metricsListen, '0.0.0.0:9464');
  t.is(loadConfig({ PARLEY_METRICS_LISTEN: '[::1]:9464' }).metricsListen, '[::1]:9464');
  const e = t.throws(() => loadConfig({ PARLEY_METRICS_LISTEN: 'http://metrics.example/secret' }), { instanceOf: ConfigError });
  t.regex(e!.message, /PARLEY_METRICS_LISTEN: must be host:port/);
  t.false(e!.message.includes('secret'));
});

test('Redis Cluster: off by default; PARLEY_REDIS_CLUSTER=true makes REDIS_URL a node of a cluster, with optional seeds', (t) => {
  t.is(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' }).redisCluster, undefined);
  t.deepEqual(loadConfig({ REDIS_URL: 'redis://127.0.0.1:7001', PARLEY_REDIS_CLUSTER: 'true' }).redisCluster, { seeds: [] });
  t.deepEqual(
    loadConfig({ REDIS_URL: 'redis://:pw@10.0.0.1:7001', PARLEY_REDIS_CLUSTER: 'true', PARLEY_REDIS_CLUSTER_SEEDS: '10.0.0.2:7001,redis-3.internal:7001' }).redisCluster,
    { seeds: ['10.0.0.2:7001', 'redis-3.internal:7001'] },
  );
  t.is(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', PARLEY_REDIS_CLUSTER: 'false' }).redisCluster, undefined);
});

test('Redis Cluster: a bad or incomplete cluster setting is a configuration error naming its variable, never echoing it', (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ REDIS_URL: 'redis://127.0.0.1:7001', PARLEY_REDIS_CLUSTER: 'yes' }, /^ {2}PARLEY_REDIS_CLUSTER: /m],
    [{ REDIS_URL: 'redis://127.0.0.1:7001', PARLEY_REDIS_CLUSTER: 'true', PARLEY_REDIS_CLUSTER_SEEDS: 'secret-host' }, /PARLEY_REDIS_CLUSTER_SEEDS: must be host:port/],
    [{ PARLEY_REDIS_CLUSTER: 'true' }, /PARLEY_REDIS_CLUSTER: needs REDIS_URL/],
    [{ REDIS_URL: 'redis://127.0.0.1:6379', PARLEY_REDIS_CLUSTER_SEEDS: '10.0.0.2:7001' }, /PARLEY_REDIS_CLUSTER_SEEDS: only with PARLEY_REDIS_CLUSTER=true/],
    // A brace in the prefix would become every key's hash tag: the whole data set in one slot.
    [{ REDIS_URL: 'redis://127.0.0.1:7001', PARLEY_REDIS_CLUSTER: 'true', PARLEY_REDIS_PREFIX: '{parley}:' }, /PARLEY_REDIS_PREFIX: must not contain \{ or \}/],
  ];
  for (const [env, message] of cases) {
    const e = t.throws(() => loadConfig(env), { instanceOf: ConfigError, message });
    t.false(e!.message.includes('secret-host'), 'the value is not echoed');
  }
  t.is(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', PARLEY_REDIS_PREFIX: '{parley}:' }).redisPrefix, '{parley}:', 'one Redis: any prefix');
});
