import test from 'ava';
import { hotSessionSchema, storedSessionSchema } from '../../src/genie/store.js';
import { cachedPromptSchema, promptRowSchema } from '../../src/prompt/store.js';
import { parseFilter, parseOrderBy } from '../../src/filter.js';
import { AppError } from '../../src/errors.js';

const copy = {
  id: 's1',
  accountId: 'a',
  modelType: 'qa',
  schemaVersion: 1,
  state: 'x',
  actor: '',
  actorInput: '',
  fields: {},
  revision: 1,
  dialogueLength: 0,
  dialogueTokenCount: 0,
  tokenEncoding: 'o200k_base',
  createdAt: '2025-01-01T00:00:00.000Z',
  updatedAt: '2025-01-01T00:00:00.000Z',
};

test('a stored answer written before labels existed reads as no labels (null prototype); a hot copy without them does not decode (a miss)', (t) => {
  t.throws(() => hotSessionSchema.parse(copy));
  const answer = storedSessionSchema.parse(copy);
  t.deepEqual(Object.keys(answer.labels), []);
  t.is(Object.getPrototypeOf(answer.labels), null);
  for (const schema of [hotSessionSchema, storedSessionSchema]) {
    const labelled = schema.parse({ ...copy, labels: { constructor: 'c', team: 'a' } });
    t.is(labelled.labels['constructor'] as unknown, 'c');
    t.is(Object.getPrototypeOf(labelled.labels), null);
  }
  const promptCopy = {
    id: 'p',
    accountId: 'a',
    userProfileId: 'u',
    llmClientId: 'l',
    name: 'n',
    description: '',
    version: '1',
    annotations: {},
    tags: [],
    sessionKey: 'k',
    ipAddress: '',
    userAgent: '',
    url: '',
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    revision: 1,
  };
  t.deepEqual(Object.keys(promptRowSchema.parse(promptCopy).labels), []);
  t.throws(() => cachedPromptSchema.parse(promptCopy));
  t.is(cachedPromptSchema.parse({ ...promptCopy, labels: { a: 'b' } }).labels['a'], 'b');
});

const sessions = { equality: ['state', 'model_type', 'end_user_id'] } as const;

test('the filter parser: each form, escapes, AND only; the order_by forms', (t) => {
  t.deepEqual(parseFilter('', sessions), []);
  t.deepEqual(parseFilter('  labels.a-b_1 = "x\\"y\\\\z"  AND labels.k:*  AND state="s"', sessions), [
    { kind: 'label', key: 'a-b_1', value: 'x"y\\z' },
    { kind: 'has_label', key: 'k' },
    { kind: 'equals', field: 'state', value: 's' },
  ]);
  const [time] = parseFilter('update_time>="2025-01-31T12:00:00.5+01:00"', sessions);
  t.deepEqual(time, { kind: 'time', field: 'update_time', op: '>=', at: new Date('2025-01-31T11:00:00.500Z') });
  t.deepEqual(parseOrderBy(' update_time   desc '), { field: 'update_time', desc: true });
  t.deepEqual(parseOrderBy('create_time asc'), { field: 'create_time', desc: false });
  t.is(parseOrderBy(''), undefined);
  for (const bad of ['and', 'labels.a = "x" and labels.b = "y"', 'labels = "x"', 'labels.', '"x" = state', 'state =', 'state = "a" AND AND state = "b"']) {
    const err = t.throws(() => parseFilter(bad, sessions), { instanceOf: AppError }, bad);
    t.is(err?.code, 'INVALID_ARGUMENT', bad);
  }
});
