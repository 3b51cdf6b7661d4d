// The genie-flow reader against a real Redis holding a dump in genie-flow's own serialization, with the
// ImportSession side replaced by a recorder (the end-to-end run through a server is test/e2e/genie-flow-import.test.ts).
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { importGenieFlow, parseMapping, type Importer, type TypeLookup } from '../../src/transfer/from-genie-flow.js';
import { describeReport } from '../../src/transfer/report.js';
import { parleySessionId, type Target } from '../../src/transfer/genie-flow.js';
import type { SessionRecord } from '../../src/gen/parley/genie/v1/genie.js';
import { realRedisUrl, testWhen, uniqueName } from '../helpers/backends.js';
import { DUMP_OFFSET, genieFlowDump, objectKey } from '../helpers/genie-flow-dump.js';

const withRedis = testWhen(realRedisUrl !== undefined, 'no Redis to hold the dump: set REDIS_URL or PARLEY_TEST_REDIS_URL');

/** Writes the dump under a prefix of its own; the teardown deletes exactly those keys (never a flush). */
async function dumpInRedis(t: ExecutionContext) {
  const redis = new Redis(realRedisUrl!);
  const prefix = uniqueName('genieflow');
  const dump = genieFlowDump(prefix);
  for (const [k, v] of dump.strings) await redis.set(k, v);
  for (const [k, fields] of dump.hashes) await redis.hset(k, ...[...fields].flat());
  t.teardown(async () => {
    let cursor = '0';
    do {
      // As bytes: a key name that is not UTF-8 must come back as it is to be deleted.
      const [next, keys] = await redis.scanBuffer(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 100);
      cursor = next.toString();
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
    redis.disconnect();
  });
  return { redis, prefix, dump };
}

const interview = (schemaVersion: number): Target => ({ modelType: 'interview', schemaVersion, states: new Set(['intro', 'ask', 'done']), tokenizerEncoding: '' });
const lookup: TypeLookup = async (name, version) => (name === 'interview' && (version ?? 2) <= 2 ? interview(version ?? 2) : undefined);

/** An ImportSession stand-in: keeps each session's records, answers `present` for an id it already has. */
function recorder() {
  const sessions = new Map<string, SessionRecord[]>();
  const importer: Importer = async (records) => {
    const id = records[0]!.header!.sessionId;
    if (sessions.has(id)) return 'present';
    sessions.set(id, records);
    return 'imported';
  };
  return { sessions, importer };
}

withRedis('genie-flow reader: imports the mapped sessions of a dump, refuses the rest with reasons, and a rerun imports nothing', async (t) => {
  const { redis, prefix, dump } = await dumpInRedis(t);
  // An object key that does not hold a string is refused, not fatal.
  await redis.hset(objectKey(prefix, 'Interview', 'odd'), 'x', '1');
  // …and so is one whose name is not UTF-8 (two of them, told apart).
  for (const b of [0xfe, 0xff]) await redis.set(Buffer.concat([Buffer.from(objectKey(prefix, 'Interview', 'x')), Buffer.from([b])]), '1:0:{}');
  const options = { prefix, mappings: ['Interview@0=interview@1', 'Interview=interview'].map(parseMapping), naiveOffsetMinutes: DUMP_OFFSET, scanCount: 2 };
  const { sessions, importer } = recorder();

  const first = await importGenieFlow(redis, options, importer, lookup);
  t.is(first.imported, 3, describeReport(first));
  t.is(first.present, 0);
  t.is(first.refused, 6);
  t.deepEqual(Object.fromEntries(first.byKind), { 'unknown-state': 1, 'unmapped-class': 1, malformed: 4 });
  const reasons = first.refusals.map((r) => `${r.kind}: ${r.reason}`).sort();
  t.deepEqual(reasons, [
    'malformed: the key does not hold a string',
    'malformed: the key is not valid UTF-8',
    'malformed: the key is not valid UTF-8',
    'malformed: the object is flagged compressed but is not a Snappy block',
    'unknown-state: state "archived" is not a state of interview version 2',
    'unmapped-class: no --model-type maps class Survey (schema version 0)',
  ]);
  t.regex(describeReport(first), /^imported: 3\nalready present: 0\nrefused: 6 \(malformed 4, unknown-state 1, unmapped-class 1\)$/m);

  const a = sessions.get(dump.ids.ulidId)!;
  t.like(a[0]?.header, { sessionId: dump.ids.ulidId, modelType: 'interview', schemaVersion: 2, state: 'ask', createTime: dump.expected.dialogueA[0]!.timestamp });
  t.deepEqual({ ...a[1]?.revision?.fields }, { user_name: 'Ada', age: 36, score: 1 });
  t.deepEqual(
    a.filter((r) => r.element).map((r) => ({ actorText: r.element!.actorText, timestamp: r.element!.timestamp })),
    dump.expected.dialogueA.map((e) => ({ actorText: e.actorText, timestamp: e.timestamp })),
  );
  t.deepEqual(
    a.filter((r) => r.secondary).map((r) => [r.secondary!.key, r.secondary!.value.toString()]),
    [
      ['persistence', dump.expected.persistenceValue],
      ['user_info', dump.expected.userValue],
    ],
  );
  const hex = sessions.get(parleySessionId('Interview', dump.ids.hexId))!;
  t.like(hex[0]?.header, { schemaVersion: 1, state: 'intro' });
  t.deepEqual({ ...hex[1]?.revision?.fields }, { name: 'Grace' });
  t.truthy(sessions.get(parleySessionId('Interview', dump.ids.legacyId)));

  const second = await importGenieFlow(redis, options, importer, lookup);
  t.like(second, { imported: 0, present: 3, refused: 6 });
});

withRedis('genie-flow reader: a mapping to a type the account lacks stops the run before anything is read', async (t) => {
  const { redis, prefix } = await dumpInRedis(t);
  const { sessions, importer } = recorder();
  await t.throwsAsync(importGenieFlow(redis, { prefix, mappings: [parseMapping('Interview=interview@3')], naiveOffsetMinutes: 0 }, importer, lookup), {
    message: 'model type interview version 3 is not registered in the API key\'s account',
  });
  t.is(sessions.size, 0);
});

test('genie-flow parseMapping reads Class[@version]=type[@version] and names a bad one', (t) => {
  t.deepEqual(parseMapping('Interview=interview'), { className: 'Interview', genieFlowVersion: undefined, modelType: 'interview', schemaVersion: undefined });
  t.deepEqual(parseMapping('Interview@0=my.type-x@12'), { className: 'Interview', genieFlowVersion: 0, modelType: 'my.type-x', schemaVersion: 12 });
  for (const bad of ['Interview', '=x', 'Inter view=x', 'A=1x', 'A@x=b', 'A=b@'])
    t.throws(() => parseMapping(bad), { message: /^--model-type ".*" is not <Class>\[@<genie-flow version>\]=<parley model type>\[@<schema version>\]$/ }, bad);
});
