import type { ServiceError } from '@grpc/grpc-js';
import type { GenieServiceClient, ModelType, StateMachine, UpgradeStep } from '../../src/gen/parley/genie/v1/genie.js';
import { rpc, type Tenant, type TestServer } from '../helpers/harness.js';

/** The README's flow: the user asks, the LLM answers, and round again. */
export const qaMachine: StateMachine = {
  states: ['awaiting_question', 'awaiting_answer'],
  initialState: 'awaiting_question',
  transitions: [
    { fromState: 'awaiting_question', event: 'user_input', toState: 'awaiting_answer', actor: 'user' },
    { fromState: 'awaiting_answer', event: 'ai_response', toState: 'awaiting_question', actor: 'assistant' },
  ],
};

export const qaSchema = {
  type: 'object',
  properties: {
    topic: { type: 'string', minLength: 1 },
    turns: { type: 'integer', minimum: 0 },
    profile: { type: 'object', properties: { age: { type: 'integer' } } },
  },
  required: ['topic'],
};

export function modelType(over: Partial<ModelType> = {}): ModelType {
  return {
    name: 'qa',
    schemaVersion: 1,
    jsonSchema: qaSchema,
    stateMachine: qaMachine,
    upgrades: [],
    cacheTtlSeconds: 0,
    sessionTtlSeconds: 0,
    createTime: undefined,
    ...over,
  };
}

export const step = (fromVersion: number, s: Partial<UpgradeStep>): UpgradeStep => ({
  fromVersion,
  renameField: undefined,
  dropField: undefined,
  addField: undefined,
  mapStates: undefined,
  ...s,
});

/** Thin promisified calls of every GenieService method for one tenant. */
export function genie(s: TestServer, tenant: Tenant) {
  const c: GenieServiceClient = s.genie;
  const md = tenant.md;
  return {
    register: (m: ModelType) => rpc(c, c.registerModelType, { modelType: m }, md),
    getType: (name: string, schemaVersion = 0) => rpc(c, c.getModelType, { name, schemaVersion }, md),
    listTypes: (name = '', pageSize = 0, pageToken = '') => rpc(c, c.listModelTypes, { name, pageSize, pageToken }, md),
    create: (type: string, fields: Record<string, unknown> | undefined = { topic: 'tax' }, expireTime?: Date) =>
      rpc(c, c.createSession, { modelType: type, fields, expireTime }, md).then((r) => r.session!),
    get: (sessionId: string, revision = 0) => rpc(c, c.getSession, { sessionId, revision }, md).then((r) => r.session!),
    update: (
      sessionId: string,
      paths: string[] | undefined,
      values: { fields?: Record<string, unknown>; actor?: string; actorInput?: string; expireTime?: Date },
      expectedRevision = 0,
    ) =>
      rpc(
        c,
        c.updateSession,
        {
          session: {
            sessionId,
            modelType: '',
            schemaVersion: 0,
            state: '',
            dialogue: [],
            actor: values.actor ?? '',
            actorInput: values.actorInput ?? '',
            fields: values.fields,
            currentResponse: undefined,
            revision: 0,
            createTime: undefined,
            updateTime: undefined,
            forkedFromSessionId: '',
            forkedFromRevision: 0,
            expireTime: values.expireTime,
          },
          updateMask: paths,
          expectedRevision,
        },
        md,
      ).then((r) => r.session!),
    del: (sessionId: string, expectedRevision = 0) => rpc(c, c.deleteSession, { sessionId, expectedRevision }, md),
    list: (modelType = '', state = '', pageSize = 0, pageToken = '') => rpc(c, c.listSessions, { modelType, state, pageSize, pageToken }, md),
    fork: (sessionId: string, revision = 0) => rpc(c, c.forkSession, { sessionId, revision }, md).then((r) => r.session!),
    send: (sessionId: string, event: string, actorInput = '', actor = '', expectedRevision = 0) =>
      rpc(c, c.sendEvent, { sessionId, event, actor, actorInput, expectedRevision }, md),
    append: (sessionId: string, actor: string, actorText: string, expectedRevision = 0) =>
      rpc(c, c.appendDialogue, { sessionId, actor, actorText, expectedRevision }, md).then((r) => r.session!),
    format: (sessionId: string, format: number, revision = 0) => rpc(c, c.formatDialogue, { sessionId, format, revision }, md).then((r) => r.text),
    put: (sessionId: string, key: string, value: Buffer, expectedRevision = 0) =>
      rpc(c, c.putSecondary, { sessionId, key, value, expectedRevision }, md),
    getSecondary: (sessionId: string, key: string) => rpc(c, c.getSecondary, { sessionId, key }, md),
    keys: (sessionId: string, pageSize = 0, pageToken = '') => rpc(c, c.listSecondaryKeys, { sessionId, pageSize, pageToken }, md),
  };
}

export const code = (e: unknown) => (e as ServiceError).code;
export const details = (e: unknown) => (e as ServiceError).details;

/** A machine whose events loop on one state, so any number of them apply in any order (chat and watch tests). */
export const chatType = modelType({
  name: 'chat',
  jsonSchema: undefined,
  stateMachine: {
    states: ['open'],
    initialState: 'open',
    transitions: [
      { fromState: 'open', event: 'user_says', toState: 'open', actor: 'user' },
      { fromState: 'open', event: 'llm_says', toState: 'open', actor: 'assistant' },
    ],
  },
});
