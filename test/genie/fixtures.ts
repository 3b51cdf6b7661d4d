import type { ServiceError } from '@grpc/grpc-js';
import { Actor, type GenieServiceClient, type ModelType, type StateMachine, type UpgradeStep } from '../../src/gen/parley/genie/v1/genie.js';
import { errorInfo, rpc, type Tenant, type TestServer } from '../helpers/harness.js';

/** The README's flow: the user asks, the LLM answers, and round again. */
export const qaMachine: StateMachine = {
  states: ['awaiting_question', 'awaiting_answer'],
  initialState: 'awaiting_question',
  transitions: [
    { fromState: 'awaiting_question', eventName: 'user_input', toState: 'awaiting_answer', actor: Actor.ACTOR_USER },
    { fromState: 'awaiting_answer', eventName: 'ai_response', toState: 'awaiting_question', actor: Actor.ACTOR_ASSISTANT },
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
    cacheTtl: undefined,
    sessionTtl: undefined,
    createTime: undefined,
    tokenizerEncoding: '',
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

/** `user`/`assistant`/`system` (or '' for unset) as the Actor enum; an enum value passes through. */
export const actorOf = (a: string | Actor): Actor =>
  typeof a === 'number' ? a : a === '' ? Actor.ACTOR_UNSPECIFIED : ((Actor as unknown as Record<string, Actor>)[`ACTOR_${a.toUpperCase()}`] ?? (99 as Actor));

/** 0 (the old "unconditional") and undefined both leave an optional revision unset. */
const opt = (n: number | undefined) => (n ? n : undefined);

/** An UpdateSessionRequest.session carrying only the values the mask may name. */
export function sessionValues(sessionId: string, values: { actor?: string | Actor; actorInput?: string; expireTime?: Date; labels?: Record<string, string> }) {
  return {
    sessionId,
    modelType: '',
    schemaVersion: 0,
    state: '',
    dialogue: [],
    actor: actorOf(values.actor ?? ''),
    actorInput: values.actorInput ?? '',
    fields: undefined,
    currentResponse: undefined,
    revision: 0,
    createTime: undefined,
    updateTime: undefined,
    forkedFromSessionId: '',
    forkedFromRevision: 0,
    expireTime: values.expireTime,
    dialogueLength: 0,
    endUserId: '',
    dialogueTokenCount: 0,
    labels: values.labels ?? {},
  };
}

/** Thin promisified calls of every GenieService method for one tenant. */
export function genie(s: TestServer, tenant: Tenant) {
  const c: GenieServiceClient = s.genie;
  const md = tenant.md;
  return {
    client: c,
    md,
    register: (m: ModelType, requestId = '') => rpc(c, c.registerModelType, { modelType: m, requestId }, md),
    getType: (name: string, schemaVersion = 0) => rpc(c, c.getModelType, { name, schemaVersion: opt(schemaVersion) }, md),
    listTypes: (name = '', pageSize = 0, pageToken = '') => rpc(c, c.listModelTypes, { name, pageSize, pageToken }, md),
    create: (type: string, fields: Record<string, unknown> | undefined = { topic: 'tax' }, expireTime?: Date, requestId = '') =>
      rpc(c, c.createSession, { endUserId: '', modelType: type, fields, expireTime, requestId, labels: {} }, md).then((r) => r.session!),
    get: (sessionId: string, revision = 0) => rpc(c, c.getSession, { sessionId, revision: opt(revision) }, md).then((r) => r.session!),
    getFull: (sessionId: string, revision = 0) => rpc(c, c.getSession, { sessionId, revision: opt(revision) }, md),
    /** UpdateSession: `paths` of the session's own fields, `fieldsPatch` a JSON Merge Patch of the user fields. */
    update: (
      sessionId: string,
      paths: string[] | undefined,
      values: { fieldsPatch?: Record<string, unknown>; actor?: string | Actor; actorInput?: string; expireTime?: Date },
      expectedRevision = 0,
      requestId = '',
    ) =>
      rpc(
        c,
        c.updateSession,
        { session: sessionValues(sessionId, values), updateMask: paths, expectedRevision: opt(expectedRevision), fieldsPatch: values.fieldsPatch, requestId },
        md,
      ),
    /** UpdateSession with only a fields_patch; resolves to the session. */
    patch: (sessionId: string, fieldsPatch: Record<string, unknown>, expectedRevision = 0) =>
      rpc(c, c.updateSession, { session: sessionValues(sessionId, {}), updateMask: undefined, expectedRevision: opt(expectedRevision), fieldsPatch, requestId: '' }, md).then(
        (r) => r.session!,
      ),
    del: (sessionId: string, expectedRevision = 0, requestId = '') => rpc(c, c.deleteSession, { sessionId, expectedRevision: opt(expectedRevision), requestId }, md),
    list: (modelType = '', state = '', pageSize = 0, pageToken = '') => rpc(c, c.listSessions, { endUserId: '', modelType, state, pageSize, pageToken, filter: '', orderBy: '', showTotalSize: false }, md),
    fork: (sessionId: string, revision = 0, requestId = '') => rpc(c, c.forkSession, { sessionId, revision: opt(revision), requestId }, md).then((r) => r.session!),
    send: (sessionId: string, eventName: string, actorInput = '', actor: string | Actor = '', expectedRevision = 0, requestId = '') =>
      rpc(c, c.sendEvent, { sessionId, eventName, actor: actorOf(actor), actorInput, expectedRevision: opt(expectedRevision), requestId }, md),
    append: (sessionId: string, actor: string | Actor, actorText: string, expectedRevision = 0, requestId = '') =>
      rpc(c, c.appendDialogue, { sessionId, actor: actorOf(actor), actorText, expectedRevision: opt(expectedRevision), requestId }, md),
    listDialogue: (sessionId: string, pageSize = 0, pageToken = '', revision = 0) =>
      rpc(c, c.listDialogue, { sessionId, revision: opt(revision), pageSize, pageToken }, md),
    format: (sessionId: string, format: number, revision = 0) =>
      rpc(c, c.formatDialogue, { sessionId, format, revision: opt(revision), tokenBudget: undefined, tokenizerEncoding: '' }, md).then((r) => r.text),
    /** FormatDialogue with every field: the whole response. */
    render: (sessionId: string, format: number, opts: { tokenBudget?: number; tokenizerEncoding?: string; revision?: number } = {}) =>
      rpc(c, c.formatDialogue, { sessionId, format, revision: opts.revision, tokenBudget: opts.tokenBudget, tokenizerEncoding: opts.tokenizerEncoding ?? '' }, md),
    put: (sessionId: string, key: string, value: Buffer, expectedRevision = 0, requestId = '') =>
      rpc(c, c.putSecondary, { sessionId, key, value, expectedRevision: opt(expectedRevision), requestId }, md),
    getSecondary: (sessionId: string, key: string) => rpc(c, c.getSecondary, { sessionId, key }, md),
    keys: (sessionId: string, pageSize = 0, pageToken = '') => rpc(c, c.listSecondaryKeys, { sessionId, pageSize, pageToken }, md),
  };
}

export const code = (e: unknown) => (e as ServiceError).code;
/** The google.rpc.ErrorInfo reason of a failed call. */
export const reasonOf = (e: unknown) => errorInfo(e as ServiceError)?.reason;
export const details = (e: unknown) => (e as ServiceError).details;

/** A machine whose events loop on one state, so any number of them apply in any order (chat and watch tests). */
export const chatType = modelType({
  name: 'chat',
  jsonSchema: undefined,
  stateMachine: {
    states: ['open'],
    initialState: 'open',
    transitions: [
      { fromState: 'open', eventName: 'user_says', toState: 'open', actor: Actor.ACTOR_USER },
      { fromState: 'open', eventName: 'llm_says', toState: 'open', actor: Actor.ACTOR_ASSISTANT },
    ],
  },
});
