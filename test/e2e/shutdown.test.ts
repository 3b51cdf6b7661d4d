import test from 'ava';
import { Actor } from '../../src/gen/parley/genie/v1/genie.js';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { HealthClient } from '../../src/gen/grpc/health/v1/health.js';
import { createTenant, rpc, startTestServer } from '../helpers/harness.js';
import { genie, modelType } from '../genie/fixtures.js';
import { eventually } from '../helpers/eventually.js';

test('graceful shutdown lets an in-flight call finish, then refuses new ones', async (t) => {
  const s = await startTestServer({ shutdownGraceMs: 5_000 });
  const tenant = await createTenant(s);
  const g = genie(s, tenant);
  await g.register(modelType({ name: 'loop', jsonSchema: undefined, stateMachine: { states: ['a'], initialState: 'a', transitions: [{ fromState: 'a', eventName: 'go', toState: 'a', actor: Actor.ACTOR_USER }] } }));
  const { sessionId } = await g.create('loop', {});

  // Hold the session's row lock so the next SendEvent is still running when shutdown starts.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const holder = s.app.db.transaction(async (trx) => {
    await trx('genie_sessions').where({ id: sessionId }).forUpdate().first();
    locked();
    await held;
  });
  await isLocked;
  const inFlight = g.send(sessionId, 'go', 'sent before shutdown');
  // The call must have reached the server (it waits on the row lock there) before the clients close.
  await eventually(() => s.app.server.calls.size > 0, 'the SendEvent to be in flight on the server');

  const stopping = s.stop();
  // New calls are refused while the one in flight still runs.
  const fresh = new HealthClient(s.address, credentials.createInsecure());
  const check = () => rpc(fresh, fresh.check, { service: '' }, undefined, { deadline: Date.now() + 2_000 });
  await eventually(() => check().then(() => false, () => true), 'a new call to be refused');
  release();
  await holder;
  const r = await inFlight;
  t.is(r.revision, 2, 'the call in flight when shutdown began completed');
  await stopping;

  const after = await t.throwsAsync<ServiceError>(check());
  t.true(after?.code === status.UNAVAILABLE || after?.code === status.DEADLINE_EXCEEDED, `a new call after shutdown got ${after?.code}`);
  fresh.close();
});
