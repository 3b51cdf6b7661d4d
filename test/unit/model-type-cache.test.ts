import test from 'ava';
import { MemoryBus, MemoryKv } from '../../src/storage/memory-kv.js';
import { GenieCache } from '../../src/genie/cache.js';
import { GenieUseCases } from '../../src/genie/service.js';
import type { StoredSession } from '../../src/genie/store.js';
import type { ModelTypeDef } from '../../src/genie/model-type.js';
import { MemoryGenieStore } from '../genie/memory-store.js';

const tick = () => new Promise((r) => setTimeout(r, 0));
const caller = { apiKeyId: 'k', userProfileId: 'u', accountId: 'acc' };
const machine = { states: ['a', 'b'], initialState: 'a', transitions: [] };
const def = (schemaVersion: number, upgrades: ModelTypeDef['upgrades'] = []): ModelTypeDef => ({
  name: 'qa',
  schemaVersion,
  jsonSchema: undefined,
  stateMachine: machine,
  upgrades,
  cacheTtlSeconds: 0,
  sessionTtlSeconds: 0,
});

/** Two replicas sharing Redis (in memory), the bus and the stores (in memory); one hot session. */
async function replicas(opts: { bus?: boolean; now?: () => number } = {}) {
  const kv = new MemoryKv();
  const bus = new MemoryBus();
  const store = new MemoryGenieStore();
  await store.insertModelType('acc', def(1));
  const session: StoredSession = {
    id: 's1',
    accountId: 'acc',
    modelType: 'qa',
    schemaVersion: 1,
    state: 'a',
    actor: '',
    actorInput: '',
    fields: { x: 1 },
    revision: 1,
    dialogueLength: 0,
    dialogueTokenCount: 0,
    tokenEncoding: 'o200k_base',
    forkedFromSessionId: undefined,
    forkedFromRevision: undefined,
    expireTime: undefined,
    endUserId: undefined,
    labels: {},
    createdAt: new Date(),
    updatedAt: new Date(),
  };
  const cache = new GenieCache(kv, bus);
  await cache.put(session, [], (await cache.get(session.id, 0)).token, 60_000);
  const deps = { types: store, sessions: store, cache, unitOfWork: store, bus: opts.bus === false ? undefined : bus };
  const make = () => new GenieUseCases(deps, { typeCacheTtlMs: 10_000, now: opts.now });
  const a = make();
  const b = make();
  await a.start();
  await b.start();
  return { a, b, kv, cache, session, typeReads: () => store.typeReads };
}

test('a hot GetSession reads the model type versions once per process', async (t) => {
  const { a, typeReads } = await replicas();
  await a.getSession(caller, 's1', 0);
  await a.getSession(caller, 's1', 0);
  await a.getSession(caller, 's1', 0);
  t.is(typeReads(), 1);
  await a.stop();
});

test('a new version is seen at once by the registering process and on the bus by the others', async (t) => {
  const { a, b } = await replicas();
  t.is((await a.getSession(caller, 's1', 0)).session.schemaVersion, 1);
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 1);
  await a.modelTypes.register(caller, def(2, [{ kind: 'add_field', fromVersion: 1, name: 'y', defaultValue: 2 }]));
  const here = (await a.getSession(caller, 's1', 0)).session;
  t.is(here.schemaVersion, 2);
  t.deepEqual(here.fields, { x: 1, y: 2 });
  await tick();
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 2);
  await a.stop();
  await b.stop();
});

test('without the bus message the TTL bounds staleness, and a newer stored version reloads at once', async (t) => {
  let now = 0;
  const { a, b, cache, session } = await replicas({ bus: false, now: () => now });
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 1);
  await a.modelTypes.register(caller, def(2));
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 1); // stale, within the TTL
  now += 10_000;
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 2);
  await a.modelTypes.register(caller, def(3));
  // A session already stored at version 3 (by a process that knew) is never unreadable here.
  await cache.put({ ...session, schemaVersion: 3, revision: 2 }, [], (await cache.get(session.id, 0)).token, 60_000);
  t.is((await b.getSession(caller, 's1', 0)).session.schemaVersion, 3);
});
