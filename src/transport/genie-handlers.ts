import { z } from 'zod';
import type { GenieUseCases, SessionPath, SessionView, ElementMeta } from '../genie/service.js';
import { MAX_FIELDS_BYTES, MAX_SECONDARY_BYTES, MAX_TEXT_BYTES } from '../genie/service.js';
import { MODEL_TYPE_NAME, STATE_OR_EVENT, type ModelTypeDef, type ModelTypeRow, type UpgradeStepDef } from '../genie/model-type.js';
import type { Actor as DomainActor, DialogueFormatName } from '../genie/dialogue-format.js';
import type { DialogueRow, SecondaryMeta } from '../genie/store.js';
import {
  Actor,
  DialogueFormat,
  type DialogueElement,
  type DialogueElementInfo,
  type GenieSession,
  type GenieServiceServer,
  type ModelType,
  type SecondaryEntry,
  type UpgradeStep,
  type AppendDialogueRequest,
  type CreateSessionRequest,
  type DeleteSessionRequest,
  type ForkSessionRequest,
  type DialogueSnapshotRequest,
  type FormatDialogueRequest,
  type GetModelTypeRequest,
  type GetSecondaryRequest,
  type GetSessionRequest,
  type ListDialogueRequest,
  type ListModelTypesRequest,
  type ListSecondaryKeysRequest,
  type ListSessionsRequest,
  type PutSecondaryRequest,
  type RegisterModelTypeRequest,
  type SendEventRequest,
  type UpdateSessionRequest,
} from '../gen/parley/genie/v1/genie.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import { quote } from '../errors.js';
import { TOKENIZER_ENCODINGS, isTokenizerEncoding, type TokenizerEncoding } from '../genie/tokens.js';
import { parseInput } from '../validate.js';
import { mapKey } from '../field-path.js';
import { MAX_PAGE_SIZE, pageSizeOf } from '../paging.js';
import { callerOf } from './authenticate.js';
import { parseFilter, parseOrderBy } from '../filter.js';
import { bytesOfAtMost, labelsField, optionalEndUserId, jsonOfAtMost, jsonSizeIssue, optionalString, structOfAtMost, textOfAtMost, uuid, type RequestSchema } from './zod-fields.js';
import type { ServiceHandlers } from './rpc.js';

// ---------------------------------------------------------------------------------------------------------
// Domain → proto

const actorEnums: Record<DomainActor, Actor> = { user: Actor.ACTOR_USER, assistant: Actor.ACTOR_ASSISTANT, system: Actor.ACTOR_SYSTEM };
const actorNames = new Map<number, DomainActor>([
  [Actor.ACTOR_USER, 'user'],
  [Actor.ACTOR_ASSISTANT, 'assistant'],
  [Actor.ACTOR_SYSTEM, 'system'],
]);
/** Stored actor (`user`, `assistant`, `system`, or '' for nobody yet) → the Actor enum. */
export const actorToProto = (a: string): Actor => actorEnums[a as DomainActor] ?? Actor.ACTOR_UNSPECIFIED;
/** What an enum error tells a client to send: the JSON names of the values. */
export const ACTOR_VALUES = 'must be one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM';

const toElement = (d: DialogueRow): DialogueElement => ({
  actor: actorToProto(d.actor),
  actorText: d.actorText,
  timestamp: d.timestamp,
  eventName: d.event,
  tokenCount: d.tokenCount,
});

const toElementInfo = (e: ElementMeta | undefined): DialogueElementInfo | undefined =>
  e && { index: e.index, actor: actorToProto(e.actor), eventName: e.event, timestamp: e.timestamp, textSizeBytes: e.textBytes };

export const toSession = (v: SessionView): GenieSession => ({
  sessionId: v.session.id,
  modelType: v.session.modelType,
  schemaVersion: v.session.schemaVersion,
  state: v.session.state,
  dialogue: (v.dialogue ?? []).map(toElement),
  actor: actorToProto(v.session.actor),
  actorInput: v.session.actorInput,
  fields: v.session.fields,
  currentResponse: v.currentResponse && toElement(v.currentResponse),
  revision: v.session.revision,
  createTime: v.session.createdAt,
  updateTime: v.session.updatedAt,
  forkedFromSessionId: v.session.forkedFromSessionId ?? '',
  forkedFromRevision: v.session.forkedFromRevision ?? 0,
  expireTime: v.session.expireTime,
  dialogueLength: v.session.dialogueLength,
  endUserId: v.session.endUserId ?? '',
  labels: { ...v.session.labels },
  dialogueTokenCount: v.session.dialogueTokenCount,
});

/**
 * A session in a write's answer (CreateSession, UpdateSession, ForkSession): no dialogue and no
 * current_response, so the answer is small and a replayed request id answers exactly the same.
 */
const toWrittenSession = (v: SessionView): GenieSession => toSession({ ...v, dialogue: undefined, currentResponse: undefined });

const toUpgradeStep = (s: UpgradeStepDef): UpgradeStep => {
  const base = { fromVersion: s.fromVersion, renameField: undefined, dropField: undefined, addField: undefined, mapStates: undefined };
  switch (s.kind) {
    case 'rename_field':
      return { ...base, renameField: { oldName: s.from, newName: s.to } };
    case 'drop_field':
      return { ...base, dropField: { name: s.name } };
    case 'add_field':
      return { ...base, addField: { name: s.name, defaultValue: s.defaultValue } };
    case 'map_states':
      return { ...base, mapStates: { mapping: s.mapping } };
  }
};

const toDuration = (seconds: number): Duration | undefined => (seconds ? { seconds, nanos: 0 } : undefined);

/** A state machine with each transition mapped (proto ↔ domain spell an event differently). */
const withTransitions = <T, U>(m: { states: string[]; initialState: string; transitions: T[] }, f: (t: T) => U) => ({
  states: m.states,
  initialState: m.initialState,
  transitions: m.transitions.map(f),
});

export const toModelType = (m: ModelTypeRow): ModelType => ({
  name: m.name,
  schemaVersion: m.schemaVersion,
  jsonSchema: m.jsonSchema,
  stateMachine: withTransitions(m.stateMachine, (t) => ({ fromState: t.fromState, eventName: t.event, toState: t.toState, actor: actorToProto(t.actor) })),
  upgrades: m.upgrades.map(toUpgradeStep),
  cacheTtl: toDuration(m.cacheTtlSeconds),
  createTime: m.createdAt,
  sessionTtl: toDuration(m.sessionTtlSeconds),
  tokenizerEncoding: m.tokenizerEncoding ?? '',
});

const toEntry = (m: SecondaryMeta): SecondaryEntry => ({ key: m.key, sizeBytes: m.sizeBytes, revision: m.revision, createTime: m.createdAt });

// ---------------------------------------------------------------------------------------------------------
// Request validation: one schema per request, each size limit first (FIELD_TOO_LARGE naming the field).

const MAX_KEY_CHARS = 256;
/** A registered model type version as JSON (schema, machine, upgrades). */
const MAX_MODEL_TYPE_BYTES = 1024 * 1024;

const sessionId = uuid;
/** `optional int64`: unset is undefined; a set value names a real revision (1 or more). */
const optionalRevision = z.number().int().min(1, 'must be 1 or more (leave it unset for the current revision)').optional();
const expectedRevision = z.number().int().min(1, 'must be 1 or more (leave it unset for an unconditional write)').optional();
/** AIP-155: optional; a UUID when set. */
export const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());
const pageSize = z.number().int().nonnegative('must not be negative').transform(pageSizeOf);
const ENCODING_NAMES = `must be empty or one of ${TOKENIZER_ENCODINGS.join(', ')}`;
/** A tokenizer encoding's name; empty is unset (undefined). The message never repeats what was sent. */
export const tokenizerEncoding = z.string().transform((name, ctx): TokenizerEncoding | undefined => {
  if (name === '') return undefined;
  if (isTokenizerEncoding(name)) return name;
  ctx.issues.push({ code: 'custom', input: name, message: ENCODING_NAMES });
  return z.NEVER;
});
export const userFields = structOfAtMost(MAX_FIELDS_BYTES, MAX_KEY_CHARS);
export const utterance = textOfAtMost(MAX_TEXT_BYTES, 'bytes');
/** An Actor enum value that names a speaker; ACTOR_UNSPECIFIED and unknown numbers are refused. */
export const actor = z.number().transform((a, ctx): DomainActor => {
  const name = actorNames.get(a);
  if (name) return name;
  ctx.issues.push({ code: 'custom', input: a, message: ACTOR_VALUES });
  return z.NEVER;
});
/** A transition's actor: ACTOR_UNSPECIFIED ('') lets SendEvent name the speaker. */
const transitionActor = z.number().transform((a, ctx): DomainActor | '' => {
  const name = a === Actor.ACTOR_UNSPECIFIED ? '' : actorNames.get(a);
  if (name !== undefined) return name;
  ctx.issues.push({ code: 'custom', input: a, message: 'must be ACTOR_UNSPECIFIED, ACTOR_USER, ACTOR_ASSISTANT or ACTOR_SYSTEM' });
  return z.NEVER;
});
/** As `actor`, but ACTOR_UNSPECIFIED means "not named" (undefined). */
export const optionalActor = z
  .number()
  .refine((a) => a === Actor.ACTOR_UNSPECIFIED || actorNames.has(a), `must be ACTOR_UNSPECIFIED or one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM`)
  .transform((a) => actorNames.get(a));
export const secondaryKey = z
  .string()
  .min(1, 'is required')
  .max(256, 'must be at most 256 characters')
  .refine((k) => ![...k].some((c) => c <= '\u001f' || c === '\u007f'), 'must not contain control characters');
/** Whole seconds from 0 to `maxSeconds`; unset is 0 (the default). */
const duration = (maxSeconds: number, max: string) =>
  z
    .object({ seconds: z.number().int().min(0, 'must not be negative').max(maxSeconds, `must be at most ${max}`), nanos: z.literal(0, 'must be whole seconds') })
    .optional()
    .transform((d) => d?.seconds ?? 0);

/** One upgrade step: exactly one of its oneof, named `model_type.upgrades[i]…` as AIP-193 does. */
const upgradeStep = z
  .object({
    fromVersion: z.number(),
    renameField: z.object({ oldName: z.string(), newName: z.string() }).optional(),
    dropField: z.object({ name: z.string() }).optional(),
    addField: z.object({ name: z.string(), defaultValue: jsonOfAtMost(MAX_FIELDS_BYTES) }).optional(),
    mapStates: z.object({ mapping: z.record(z.string(), z.string()) }).optional(),
  })
  .transform((s, ctx): UpgradeStepDef => {
    const { fromVersion, renameField, dropField, addField, mapStates } = s;
    const refuse = (path: PropertyKey[], message: string) => {
      ctx.issues.push({ code: 'custom', input: s, path, message });
      return z.NEVER;
    };
    if ([renameField, dropField, addField, mapStates].filter((x) => x !== undefined).length !== 1) {
      return refuse([], 'exactly one of rename_field, drop_field, add_field or map_states is required');
    }
    if (renameField) return { fromVersion, kind: 'rename_field', from: renameField.oldName, to: renameField.newName };
    if (dropField) return { fromVersion, kind: 'drop_field', name: dropField.name };
    if (addField) {
      if (addField.defaultValue === undefined) return refuse(['addField', 'defaultValue'], 'is required (null_value for null)');
      return { fromVersion, kind: 'add_field', name: addField.name, defaultValue: addField.defaultValue };
    }
    const mapping = mapStates?.mapping ?? {};
    const bad = Object.keys(mapping).filter((from) => !STATE_OR_EVENT.test(from));
    bad.forEach((from) => refuse(['mapStates', 'mapping', mapKey(from)], 'is not a valid state id'));
    return bad.length ? z.NEVER : { fromVersion, kind: 'map_states', mapping: { ...mapping } };
  });

const registerModelType = z
  .object({
    modelType: z.object(
      {
        name: z.string().regex(MODEL_TYPE_NAME, 'must be 1–100 letters, digits, _ . or -, starting with a letter'),
        schemaVersion: z.number().int().min(1, 'must be 1 or more'),
        jsonSchema: z.record(z.string(), z.unknown()).optional(),
        stateMachine: z.object(
          {
            states: z.array(z.string()).max(1000, 'must have at most 1000 states'),
            initialState: z.string(),
            transitions: z
              .array(
                z.object({
                  fromState: z.string(),
                  eventName: z.string(),
                  toState: z.string(),
                  actor: transitionActor,
                }),
              )
              .max(1000, 'must have at most 1000 transitions'),
          },
          { error: 'is required' },
        ),
        upgrades: z.array(upgradeStep).max(100, 'must have at most 100 steps'),
        cacheTtl: duration(30 * 86_400, '30 days'),
        sessionTtl: duration(3650 * 86_400, '3650 days'),
        tokenizerEncoding,
      },
      { error: 'is required' },
    ),
    requestId,
  })
  .transform(({ modelType: m, requestId: rid }, ctx) => {
    const def: ModelTypeDef = {
      name: m.name,
      schemaVersion: m.schemaVersion,
      jsonSchema: m.jsonSchema,
      stateMachine: withTransitions(m.stateMachine, (t) => ({ fromState: t.fromState, event: t.eventName, toState: t.toState, actor: t.actor })),
      upgrades: m.upgrades,
      cacheTtlSeconds: m.cacheTtl,
      sessionTtlSeconds: m.sessionTtl,
      tokenizerEncoding: m.tokenizerEncoding ?? '',
    };
    // A whole version is read back by GetModelType and ListModelTypes: it must stay well under 4 MiB.
    const tooLarge = jsonSizeIssue(def, MAX_MODEL_TYPE_BYTES);
    if (tooLarge) ctx.issues.push({ ...tooLarge, path: ['modelType'] });
    return { def, requestId: rid };
  }) satisfies RequestSchema<RegisterModelTypeRequest>;

const getModelType = z.object({
  name: z.string().min(1, 'is required'),
  schemaVersion: z.number().int().min(1, 'must be 1 or more (leave it unset for the latest)').optional(),
}) satisfies RequestSchema<GetModelTypeRequest>;
const listModelTypes = z.object({ name: optionalString, pageSize, pageToken: optionalString }) satisfies RequestSchema<ListModelTypesRequest>;
// A time already past is allowed: the session is then deleted by the next purge.
const expireTime = z.date().optional();
const createSession = z.object({
  modelType: z.string().min(1, 'is required'),
  fields: userFields.optional().transform((f) => f ?? {}),
  expireTime,
  requestId,
  endUserId: optionalEndUserId,
  labels: labelsField,
}) satisfies RequestSchema<CreateSessionRequest>;
/** GetSession's dialogue_page_size: unset or 0 is every element that fits; larger than the maximum is capped. */
const dialoguePageSize = z
  .number()
  .int()
  .nonnegative('must not be negative')
  .optional()
  .transform((n) => (n ? Math.min(n, MAX_PAGE_SIZE) : undefined));
const getSession = z.object({ sessionId, revision: optionalRevision, dialoguePageSize }) satisfies RequestSchema<GetSessionRequest>;

// UpdateSession's mask names the session's own fields; user fields change through fields_patch.
const SESSION_PATHS: readonly SessionPath[] = ['actor', 'actor_input', 'expire_time', 'labels'];
const OUTPUT_ONLY_PATHS = new Set(['session_id', 'model_type', 'schema_version', 'state', 'dialogue', 'current_response', 'revision', 'create_time', 'update_time', 'forked_from_session_id', 'forked_from_revision', 'dialogue_length', 'end_user_id']);
const isSessionPath = (p: string): p is SessionPath => (SESSION_PATHS as readonly string[]).includes(p);

/** Why a mask path names nothing an update may set (undefined: it does, or it is `*`). */
function maskPathProblem(p: string): string | undefined {
  if (p === '*' || isSessionPath(p)) return undefined;
  if (p === 'fields' || p.startsWith('fields.')) return 'names user fields: change them with fields_patch (a JSON Merge Patch, null deletes)';
  if (p.startsWith('labels.')) return 'names one label: the path is labels, which replaces the whole map';
  if (p === 'end_user_id') return 'names end_user_id, which is set at CreateSession and never changes';
  if (OUTPUT_ONLY_PATHS.has(p)) return `names an output-only field (the state changes only through SendEvent); paths are ${SESSION_PATHS.join(', ')} or *`;
  return `names no field of GenieSession that can be updated; paths are ${SESSION_PATHS.join(', ')} or *`;
}

const updateSession = z
  .object({
    session: z.object(
      {
        sessionId,
        actor: z.number(),
        actorInput: utterance,
        expireTime,
        labels: labelsField,
        fields: z.undefined({ error: 'is output only here: change user fields with fields_patch (a JSON Merge Patch, null deletes)' }),
      },
      { error: 'is required' },
    ),
    updateMask: z.array(z.string()).optional(),
    expectedRevision,
    fieldsPatch: userFields.optional(),
    requestId,
  })
  .transform((r, ctx) => {
    const { session: s, updateMask: mask } = r;
    for (const p of mask ?? []) {
      const why = maskPathProblem(p);
      if (why) ctx.issues.push({ code: 'custom', input: mask, path: ['updateMask'], message: `path ${quote(p)} ${why}`, params: { reason: 'UPDATE_MASK_INVALID' } });
    }
    // The mask's paths (`*` is all of them), or with no mask the populated ones (AIP-134).
    const set = { actor: s.actor !== 0, actor_input: s.actorInput !== '', expire_time: s.expireTime !== undefined, labels: Object.keys(s.labels).length > 0 };
    const named = (p: string) => (p === '*' ? SESSION_PATHS : SESSION_PATHS.filter((x) => x === p));
    const paths = mask?.length ? [...new Set(mask.flatMap(named))] : SESSION_PATHS.filter((p) => set[p]);
    let actorValue: DomainActor | '' = '';
    if (paths.includes('actor')) {
      const speaker = actor.safeParse(s.actor);
      if (speaker.success) actorValue = speaker.data;
      else ctx.issues.push({ code: 'custom', input: s.actor, path: ['session', 'actor'], message: ACTOR_VALUES });
    }
    const values = { actor: actorValue, actorInput: s.actorInput, expireTime: s.expireTime, labels: paths.includes('labels') ? s.labels : undefined };
    return { sessionId: s.sessionId, update: { paths, values, fieldsPatch: r.fieldsPatch }, expectedRevision: r.expectedRevision, requestId: r.requestId };
  }) satisfies RequestSchema<UpdateSessionRequest>;
const deleteSession = z.object({ sessionId, expectedRevision, requestId }) satisfies RequestSchema<DeleteSessionRequest>;
const listSessions = z.object({
  modelType: optionalString,
  state: optionalString,
  pageSize,
  pageToken: optionalString,
  endUserId: optionalEndUserId,
  filter: z.string().optional(),
  orderBy: z.string().optional(),
  showTotalSize: z.boolean().optional(),
}) satisfies RequestSchema<ListSessionsRequest>;
/** What ListSessionsRequest.filter may name besides labels and times. */
const SESSION_FILTER = { equality: ['state', 'model_type', 'end_user_id'] } as const;
const forkSession = z.object({ sessionId, revision: optionalRevision, requestId }) satisfies RequestSchema<ForkSessionRequest>;
/**
 * An event name as a transition names it. Every RPC that takes one (SendEvent, Chat's send_event, a
 * StreamUtterance that ends with an event) checks it the same way, so a name no transition can carry is
 * INVALID_ARGUMENT on the event field, and an error message quoting it stays short.
 */
export const eventName = z.string().regex(STATE_OR_EVENT, 'must be 1–100 letters, digits, _ . : or -');

const sendEvent = z
  .object({ sessionId, eventName, actor: optionalActor, actorInput: utterance, expectedRevision, requestId })
  .transform(({ eventName: event, ...r }) => ({ ...r, event })) satisfies RequestSchema<SendEventRequest>;
const appendDialogue = z.object({ sessionId, actor, actorText: utterance, expectedRevision, requestId }) satisfies RequestSchema<AppendDialogueRequest>;
const listDialogue = z.object({ sessionId, revision: optionalRevision, pageSize, pageToken: optionalString }) satisfies RequestSchema<ListDialogueRequest>;
const formats = new Map<number, DialogueFormatName>([
  [DialogueFormat.DIALOGUE_FORMAT_CHAT, 'CHAT'],
  [DialogueFormat.DIALOGUE_FORMAT_YAML, 'YAML'],
  [DialogueFormat.DIALOGUE_FORMAT_JSON, 'JSON'],
  [DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR, 'PYTHON_REPR'],
]);
const renderingShape = {
  format: z.number().transform((f, ctx): DialogueFormatName => {
    const name = formats.get(f);
    if (name) return name;
    ctx.issues.push({ code: 'custom', input: f, message: 'must be one of DIALOGUE_FORMAT_CHAT, DIALOGUE_FORMAT_YAML, DIALOGUE_FORMAT_JSON, DIALOGUE_FORMAT_PYTHON_REPR' });
    return z.NEVER;
  }),
  tokenBudget: z.number().int().nonnegative('must not be negative (0 renders only what needs no tokens)').optional(),
  tokenizerEncoding,
};
const formatDialogue = z.object({ sessionId, revision: optionalRevision, ...renderingShape }) satisfies RequestSchema<FormatDialogueRequest>;
/** A watch's snapshot: the rendering FormatDialogue makes, at the revision the watch starts from. */
export const snapshotRequest = z
  .object(renderingShape)
  .transform((r) => ({ format: r.format, tokenBudget: r.tokenBudget, encoding: r.tokenizerEncoding })) satisfies RequestSchema<DialogueSnapshotRequest>;
const putSecondary = z
  .object({ sessionId, key: secondaryKey, value: bytesOfAtMost(MAX_SECONDARY_BYTES), expectedRevision, requestId })
  .transform((r) => ({ ...r, value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength) })) satisfies RequestSchema<PutSecondaryRequest>;
const getSecondary = z.object({ sessionId, key: secondaryKey }) satisfies RequestSchema<GetSecondaryRequest>;
const listSecondaryKeys = z.object({ sessionId, pageSize, pageToken: optionalString }) satisfies RequestSchema<ListSecondaryKeysRequest>;

// ---------------------------------------------------------------------------------------------------------

export function genieHandlers(genie: GenieUseCases): Omit<ServiceHandlers<GenieServiceServer>, 'watchSession' | 'streamUtterance' | 'chat' | 'exportSession' | 'importSession'> {
  return {
    registerModelType: async (req, ctx) => {
      const r = parseInput(registerModelType, req);
      return { modelType: toModelType(await genie.modelTypes.register(callerOf(ctx), r.def, r.requestId)) };
    },
    getModelType: async (req, ctx) => {
      const r = parseInput(getModelType, req);
      return { modelType: toModelType(await genie.modelTypes.get(callerOf(ctx), r.name, r.schemaVersion)) };
    },
    listModelTypes: async (req, ctx) => {
      const r = parseInput(listModelTypes, req);
      const page = await genie.modelTypes.list(callerOf(ctx), r.name, r.pageSize, r.pageToken);
      return { modelTypes: page.items.map(toModelType), nextPageToken: page.nextPageToken };
    },
    createSession: async (req, ctx) => {
      const r = parseInput(createSession, req);
      return { session: toWrittenSession(await genie.createSession(callerOf(ctx), r.modelType, r.fields, r.expireTime, r.requestId, r.endUserId, r.labels)) };
    },
    getSession: async (req, ctx) => {
      const r = parseInput(getSession, req);
      const view = await genie.getSession(callerOf(ctx), r.sessionId, r.revision, r.dialoguePageSize);
      return { session: toSession(view), omittedDialogueCount: view.omittedDialogue ?? 0 };
    },
    updateSession: async (req, ctx) => {
      const r = parseInput(updateSession, req);
      const { view, changed } = await genie.updateSession(callerOf(ctx), r.sessionId, r.update, r.expectedRevision, r.requestId);
      return { session: toWrittenSession(view), changed };
    },
    deleteSession: async (req, ctx) => {
      const r = parseInput(deleteSession, req);
      await genie.deleteSession(callerOf(ctx), r.sessionId, r.expectedRevision, r.requestId);
      return {};
    },
    listSessions: async (req, ctx) => {
      const r = parseInput(listSessions, req);
      const query = { restrictions: parseFilter(r.filter ?? '', SESSION_FILTER), order: parseOrderBy(r.orderBy ?? ''), withTotal: r.showTotalSize ?? false };
      const page = await genie.listSessions(callerOf(ctx), { modelType: r.modelType, state: r.state, endUserId: r.endUserId }, r.pageSize, r.pageToken, query);
      return { sessions: page.items.map(toSession), nextPageToken: page.nextPageToken, totalSize: page.totalSize };
    },
    forkSession: async (req, ctx) => {
      const r = parseInput(forkSession, req);
      return { session: toWrittenSession(await genie.forkSession(callerOf(ctx), r.sessionId, r.revision, r.requestId)) };
    },
    sendEvent: async (req, ctx) => {
      const { view, previousState, element } = await genie.sendEvent(callerOf(ctx), parseInput(sendEvent, req));
      return {
        sessionId: view.session.id,
        previousState,
        revision: view.session.revision,
        state: view.session.state,
        element: toElementInfo(element),
        updateTime: view.session.updatedAt,
      };
    },
    appendDialogue: async (req, ctx) => {
      const v = await genie.appendDialogue(callerOf(ctx), parseInput(appendDialogue, req));
      return { sessionId: v.session.id, revision: v.session.revision, state: v.session.state, element: toElementInfo(v.element), updateTime: v.session.updatedAt };
    },
    listDialogue: async (req, ctx) => {
      const r = parseInput(listDialogue, req);
      const page = await genie.listDialogue(callerOf(ctx), r.sessionId, r.revision, r.pageSize, r.pageToken);
      return { elements: page.items.map(toElement), firstIndex: page.firstIndex, nextPageToken: page.nextPageToken };
    },
    formatDialogue: async (req, ctx) => {
      const r = parseInput(formatDialogue, req);
      const out = await genie.renderWithin(callerOf(ctx), r.sessionId, { format: r.format, tokenBudget: r.tokenBudget, encoding: r.tokenizerEncoding, revision: r.revision });
      return { text: out.text, tokenCount: out.tokenCount, elementCount: out.elementCount, omittedElementCount: out.omittedCount, tokenizerEncoding: out.encoding };
    },
    putSecondary: async (req, ctx) => {
      const r = parseInput(putSecondary, req);
      const { revision: rev, createdAt } = await genie.putSecondary(callerOf(ctx), r);
      return { entry: toEntry({ key: r.key, sizeBytes: r.value.length, revision: rev, createdAt }), revision: rev };
    },
    getSecondary: async (req, ctx) => {
      const r = parseInput(getSecondary, req);
      const found = await genie.getSecondary(callerOf(ctx), r.sessionId, r.key);
      return { entry: toEntry(found), value: found.value };
    },
    listSecondaryKeys: async (req, ctx) => {
      const r = parseInput(listSecondaryKeys, req);
      const page = await genie.listSecondaryKeys(callerOf(ctx), r.sessionId, r.pageSize, r.pageToken);
      return { entries: page.items.map(toEntry), nextPageToken: page.nextPageToken };
    },
  };
}
