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
} from '../gen/parley/genie/v1/genie.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import { AppError, fieldTooLarge, invalidArgument, quote, type FieldViolation } from '../errors.js';
import { parseInput } from '../validate.js';
import { fieldPath } from '../field-path.js';
import { pageSizeOf } from '../paging.js';
import { callerOf } from './authenticate.js';
import { optionalString, uuid } from './zod-fields.js';
import { unary, type ServiceHandlers } from './rpc.js';

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

const toElement = (d: DialogueRow): DialogueElement => ({ actor: actorToProto(d.actor), actorText: d.actorText, timestamp: d.timestamp, eventName: d.event });

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
});

const toEntry = (m: SecondaryMeta): SecondaryEntry => ({ key: m.key, sizeBytes: m.sizeBytes, revision: m.revision, createTime: m.createdAt });

// ---------------------------------------------------------------------------------------------------------
// Request validation

const sessionId = uuid;
/** `optional int64`: unset is undefined; a set value names a real revision (1 or more). */
const optionalRevision = z.number().int().min(1, 'must be 1 or more (leave it unset for the current revision)').optional();
const expectedRevision = z.number().int().min(1, 'must be 1 or more (leave it unset for an unconditional write)').optional();
/** AIP-155: optional; a UUID when set. */
const requestId = optionalString.pipe(z.string().uuid('must be a UUID').optional());
const pageSize = z.number().int().nonnegative('must not be negative').transform(pageSizeOf);
const jsonObject = z.record(z.string(), z.unknown());
const fields = jsonObject.optional().transform((f) => f ?? {});
/** An Actor enum value that names a speaker; ACTOR_UNSPECIFIED and unknown numbers are refused. */
export const actor = z.number().refine((a) => actorNames.has(a), ACTOR_VALUES).transform((a) => actorNames.get(a) as DomainActor);
/** As `actor`, but ACTOR_UNSPECIFIED means "not named" (undefined). */
export const optionalActor = z
  .number()
  .refine((a) => a === Actor.ACTOR_UNSPECIFIED || actorNames.has(a), `must be ACTOR_UNSPECIFIED or one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM`)
  .transform((a) => actorNames.get(a));
const secondaryKey = z
  .string()
  .min(1, 'is required')
  .max(256, 'must be at most 256 characters')
  .refine((k) => !/[\u0000-\u001f\u007f]/.test(k), 'must not contain control characters');
/** Whole seconds from 0 to `maxSeconds`; unset is 0 (the default). */
const duration = (maxSeconds: number, max: string) =>
  z
    .object({ seconds: z.number().int().min(0, 'must not be negative').max(maxSeconds, `must be at most ${max}`), nanos: z.literal(0, 'must be whole seconds') })
    .optional()
    .transform((d) => d?.seconds ?? 0);

const modelTypeShape = z.object({
  modelType: z.object({
    name: z.string().regex(MODEL_TYPE_NAME, 'must be 1–100 letters, digits, _ . or -, starting with a letter'),
    schemaVersion: z.number().int().min(1, 'must be 1 or more'),
    jsonSchema: jsonObject.optional(),
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
              // An unknown value is reported by modelTypeViolations with the other state-machine problems.
              actor: z.number().transform((a) => (actorNames.get(a) ?? (a === Actor.ACTOR_UNSPECIFIED ? '' : `#${a}`)) as DomainActor | ''),
            }),
          )
          .max(1000, 'must have at most 1000 transitions'),
      },
      { error: 'is required' },
    ),
    upgrades: z.array(z.unknown()).max(100, 'must have at most 100 steps'),
    cacheTtl: duration(30 * 86_400, '30 days'),
    sessionTtl: duration(3650 * 86_400, '3650 days'),
  }, { error: 'is required' }),
  requestId,
});

/** The oneof of each step, checked by hand so violations name `model_type.upgrades[i]…` as AIP-193 does. */
function upgradeSteps(raw: unknown[]): UpgradeStepDef[] {
  const violations: FieldViolation[] = [];
  const steps: UpgradeStepDef[] = [];
  raw.forEach((r, i) => {
    const s = r as UpgradeStep;
    const at = (...rest: string[]) => fieldPath(['upgrades', i, ...rest], 'model_type');
    const set = [s.renameField, s.dropField, s.addField, s.mapStates].filter((x) => x !== undefined).length;
    if (set !== 1) {
      violations.push({ field: at(), description: 'exactly one of rename_field, drop_field, add_field or map_states is required' });
      return;
    }
    const fromVersion = s.fromVersion;
    if (s.renameField) steps.push({ fromVersion, kind: 'rename_field', from: s.renameField.oldName, to: s.renameField.newName });
    else if (s.dropField) steps.push({ fromVersion, kind: 'drop_field', name: s.dropField.name });
    else if (s.addField) {
      if (s.addField.defaultValue === undefined) {
        violations.push({ field: at('add_field', 'default_value'), description: 'is required (null_value for null)' });
      }
      steps.push({ fromVersion, kind: 'add_field', name: s.addField.name, defaultValue: s.addField.defaultValue ?? null });
    } else if (s.mapStates) {
      for (const from of Object.keys(s.mapStates.mapping)) {
        if (!STATE_OR_EVENT.test(from)) violations.push({ field: `${at('map_states', 'mapping')}[${quote(from, 40)}]`, description: 'is not a valid state id' });
      }
      steps.push({ fromVersion, kind: 'map_states', mapping: { ...s.mapStates.mapping } });
    }
  });
  if (violations.length) throw invalidArgument(violations);
  return steps;
}

const getModelType = z.object({ name: z.string().min(1, 'is required'), schemaVersion: z.number().int().min(1, 'must be 1 or more (leave it unset for the latest)').optional() });
const listModelTypes = z.object({ name: optionalString, pageSize, pageToken: optionalString });
// A time already past is allowed: the session is then deleted by the next purge.
const expireTime = z.date().optional();
const createSession = z.object({ modelType: z.string().min(1, 'is required'), fields, expireTime, requestId });
const getSession = z.object({ sessionId, revision: optionalRevision });
const updateSession = z.object({
  session: z.object({ sessionId, actor: z.number(), actorInput: z.string(), expireTime }, { error: 'is required' }),
  updateMask: z.array(z.string()).optional(),
  expectedRevision,
  fieldsPatch: jsonObject.optional(),
  requestId,
});
const deleteSession = z.object({ sessionId, expectedRevision, requestId });
const listSessions = z.object({ modelType: optionalString, state: optionalString, pageSize, pageToken: optionalString });
const forkSession = z.object({ sessionId, revision: optionalRevision, requestId });
/**
 * An event name as a transition names it. Every RPC that takes one (SendEvent, Chat's send_event, a
 * StreamUtterance that ends with an event) checks it the same way, so a name no transition can carry is
 * INVALID_ARGUMENT on the event field, and an error message quoting it stays short.
 */
export const eventName = z.string().regex(STATE_OR_EVENT, 'must be 1–100 letters, digits, _ . : or -');

const sendEvent = z.object({ sessionId, eventName, actor: optionalActor, actorInput: z.string(), expectedRevision, requestId });
const appendDialogue = z.object({ sessionId, actor, actorText: z.string(), expectedRevision, requestId });
const listDialogue = z.object({ sessionId, revision: optionalRevision, pageSize, pageToken: optionalString });
const formats: Partial<Record<number, DialogueFormatName>> = {
  [DialogueFormat.DIALOGUE_FORMAT_CHAT]: 'CHAT',
  [DialogueFormat.DIALOGUE_FORMAT_YAML]: 'YAML',
  [DialogueFormat.DIALOGUE_FORMAT_JSON]: 'JSON',
  [DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR]: 'PYTHON_REPR',
};
const formatDialogue = z.object({
  sessionId,
  format: z
    .number()
    .refine((f) => formats[f] !== undefined, 'must be one of DIALOGUE_FORMAT_CHAT, DIALOGUE_FORMAT_YAML, DIALOGUE_FORMAT_JSON, DIALOGUE_FORMAT_PYTHON_REPR'),
  revision: optionalRevision,
});
const putSecondary = z.object({ sessionId, key: secondaryKey, value: z.instanceof(Uint8Array), expectedRevision, requestId });
const getSecondary = z.object({ sessionId, key: secondaryKey });
const listSecondaryKeys = z.object({ sessionId, pageSize, pageToken: optionalString });

// ---------------------------------------------------------------------------------------------------------
// Size limits: FIELD_TOO_LARGE naming the field, before anything else is looked at.

const MAX_KEY_CHARS = 256;
/** A registered model type version as JSON (schema, machine, upgrades). */
const MAX_MODEL_TYPE_BYTES = 1024 * 1024;

function tooLarge(field: string, bytes: number, max: number, unit = 'bytes'): never {
  throw fieldTooLarge(field, `is ${bytes} ${unit}; at most ${max} are allowed`);
}

/** UTF-8 text of at most `max` bytes (checked by length first: a string's UTF-8 is at most 3 bytes a unit). */
function checkText(field: string, text: string | undefined, max = MAX_TEXT_BYTES): void {
  if (text === undefined || text.length * 3 <= max) return;
  const bytes = Buffer.byteLength(text);
  if (bytes > max) tooLarge(field, bytes, max);
}

/** A Struct of at most MAX_FIELDS_BYTES as JSON, with keys of at most MAX_KEY_CHARS characters. */
export function checkStruct(field: string, value: Record<string, unknown> | undefined): void {
  if (value === undefined) return;
  const bytes = Buffer.byteLength(JSON.stringify(value));
  if (bytes > MAX_FIELDS_BYTES) tooLarge(field, bytes, MAX_FIELDS_BYTES, 'bytes as JSON');
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) stack.push(...v);
    else {
      for (const [k, child] of Object.entries(v)) {
        if (k.length > MAX_KEY_CHARS) throw fieldTooLarge(field, `has a key of ${k.length} characters (${quote(k, 40)}); keys are at most ${MAX_KEY_CHARS}`);
        stack.push(child);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// UpdateSession's mask

const SESSION_PATHS: readonly SessionPath[] = ['actor', 'actor_input', 'expire_time'];
const OUTPUT_ONLY_PATHS = new Set(['session_id', 'model_type', 'schema_version', 'state', 'dialogue', 'current_response', 'revision', 'create_time', 'update_time', 'forked_from_session_id', 'forked_from_revision', 'dialogue_length']);

function maskInvalid(path: string, why: string): AppError {
  return invalidArgument('update_mask', `path ${quote(path)} ${why}`, 'UPDATE_MASK_INVALID');
}

/**
 * The session's own fields an update sets: the mask's paths (`*` is all of them), or with no mask the
 * populated ones (AIP-134). User fields are never paths: they change through fields_patch.
 */
function sessionPaths(mask: string[] | undefined, session: { actor: number; actorInput: string; expireTime?: Date | undefined }): SessionPath[] {
  if (!mask || mask.length === 0) {
    return SESSION_PATHS.filter((p) => (p === 'actor' ? session.actor !== 0 : p === 'actor_input' ? session.actorInput !== '' : session.expireTime !== undefined));
  }
  const paths = new Set<SessionPath>();
  for (const p of mask) {
    if (p === '*') SESSION_PATHS.forEach((x) => paths.add(x));
    else if ((SESSION_PATHS as readonly string[]).includes(p)) paths.add(p as SessionPath);
    else if (p === 'fields' || p.startsWith('fields.')) throw maskInvalid(p, 'names user fields: change them with fields_patch (a JSON Merge Patch, null deletes)');
    else if (OUTPUT_ONLY_PATHS.has(p)) throw maskInvalid(p, `names an output-only field (the state changes only through SendEvent); paths are ${SESSION_PATHS.join(', ')} or *`);
    else throw maskInvalid(p, `names no field of GenieSession that can be updated; paths are ${SESSION_PATHS.join(', ')} or *`);
  }
  return [...paths];
}

// ---------------------------------------------------------------------------------------------------------

export function genieHandlers(genie: GenieUseCases): Omit<ServiceHandlers<GenieServiceServer>, 'watchSession' | 'streamUtterance' | 'chat'> {
  return {
    registerModelType: unary(async (req, ctx) => {
      const { modelType: m, requestId: rid } = parseInput(modelTypeShape, req);
      const def: ModelTypeDef = {
        name: m.name,
        schemaVersion: m.schemaVersion,
        jsonSchema: m.jsonSchema,
        stateMachine: withTransitions(m.stateMachine, (t) => ({ fromState: t.fromState, event: t.eventName, toState: t.toState, actor: t.actor })),
        upgrades: upgradeSteps(m.upgrades),
        cacheTtlSeconds: m.cacheTtl,
        sessionTtlSeconds: m.sessionTtl,
      };
      for (const [i, u] of def.upgrades.entries()) {
        if (u.kind === 'add_field' && Buffer.byteLength(JSON.stringify(u.defaultValue ?? null)) > MAX_FIELDS_BYTES) {
          tooLarge(fieldPath(['upgrades', i, 'add_field', 'default_value'], 'model_type'), Buffer.byteLength(JSON.stringify(u.defaultValue)), MAX_FIELDS_BYTES, 'bytes as JSON');
        }
      }
      // A whole version is read back by GetModelType and ListModelTypes: it must stay well under 4 MiB.
      const typeBytes = Buffer.byteLength(JSON.stringify(def));
      if (typeBytes > MAX_MODEL_TYPE_BYTES) tooLarge('model_type', typeBytes, MAX_MODEL_TYPE_BYTES, 'bytes as JSON');
      return { modelType: toModelType(await genie.registerModelType(callerOf(ctx), def, rid)) };
    }),
    getModelType: unary(async (req, ctx) => {
      const r = parseInput(getModelType, req);
      return { modelType: toModelType(await genie.getModelType(callerOf(ctx), r.name, r.schemaVersion)) };
    }),
    listModelTypes: unary(async (req, ctx) => {
      const r = parseInput(listModelTypes, req);
      const page = await genie.listModelTypes(callerOf(ctx), r.name, r.pageSize, r.pageToken);
      return { modelTypes: page.items.map(toModelType), nextPageToken: page.nextPageToken };
    }),
    createSession: unary(async (req, ctx) => {
      const r = parseInput(createSession, req);
      checkStruct('fields', r.fields);
      return { session: toWrittenSession(await genie.createSession(callerOf(ctx), r.modelType, r.fields, r.expireTime, r.requestId)) };
    }),
    getSession: unary(async (req, ctx) => {
      const r = parseInput(getSession, req);
      const view = await genie.getSession(callerOf(ctx), r.sessionId, r.revision);
      return { session: toSession(view), omittedDialogueCount: view.omittedDialogue ?? 0 };
    }),
    updateSession: unary(async (req, ctx) => {
      const r = parseInput(updateSession, req);
      if (req.session?.fields !== undefined) {
        throw invalidArgument('session.fields', 'is output only here: change user fields with fields_patch (a JSON Merge Patch, null deletes)');
      }
      const paths = sessionPaths(r.updateMask, r.session);
      let actorValue: DomainActor | '' = '';
      if (paths.includes('actor')) actorValue = parseInput(z.object({ actor }), { actor: r.session.actor }, 'session.').actor;
      checkText('session.actor_input', r.session.actorInput);
      checkStruct('fields_patch', r.fieldsPatch);
      const values = { actor: actorValue, actorInput: r.session.actorInput, expireTime: r.session.expireTime };
      const { view, changed } = await genie.updateSession(
        callerOf(ctx),
        r.session.sessionId,
        { paths, values, fieldsPatch: r.fieldsPatch },
        r.expectedRevision,
        r.requestId,
      );
      return { session: toWrittenSession(view), changed };
    }),
    deleteSession: unary(async (req, ctx) => {
      const r = parseInput(deleteSession, req);
      await genie.deleteSession(callerOf(ctx), r.sessionId, r.expectedRevision, r.requestId);
      return {};
    }),
    listSessions: unary(async (req, ctx) => {
      const r = parseInput(listSessions, req);
      const page = await genie.listSessions(callerOf(ctx), { modelType: r.modelType, state: r.state }, r.pageSize, r.pageToken);
      return { sessions: page.items.map(toSession), nextPageToken: page.nextPageToken };
    }),
    forkSession: unary(async (req, ctx) => {
      const r = parseInput(forkSession, req);
      return { session: toWrittenSession(await genie.forkSession(callerOf(ctx), r.sessionId, r.revision, r.requestId)) };
    }),
    sendEvent: unary(async (req, ctx) => {
      const r = parseInput(sendEvent, req);
      checkText('actor_input', r.actorInput);
      const { view, previousState, element } = await genie.sendEvent(callerOf(ctx), {
        sessionId: r.sessionId,
        event: r.eventName,
        actor: r.actor,
        actorInput: r.actorInput,
        expectedRevision: r.expectedRevision,
        requestId: r.requestId,
      });
      return {
        sessionId: view.session.id,
        previousState,
        revision: view.session.revision,
        state: view.session.state,
        element: toElementInfo(element),
        updateTime: view.session.updatedAt,
      };
    }),
    appendDialogue: unary(async (req, ctx) => {
      const r = parseInput(appendDialogue, req);
      checkText('actor_text', r.actorText);
      const v = await genie.appendDialogue(callerOf(ctx), r);
      return { sessionId: v.session.id, revision: v.session.revision, state: v.session.state, element: toElementInfo(v.element), updateTime: v.session.updatedAt };
    }),
    listDialogue: unary(async (req, ctx) => {
      const r = parseInput(listDialogue, req);
      const page = await genie.listDialogue(callerOf(ctx), r.sessionId, r.revision, r.pageSize, r.pageToken);
      return { elements: page.items.map(toElement), firstIndex: page.firstIndex, nextPageToken: page.nextPageToken };
    }),
    formatDialogue: unary(async (req, ctx) => {
      const r = parseInput(formatDialogue, req);
      return { text: await genie.formatDialogue(callerOf(ctx), r.sessionId, formats[r.format] as DialogueFormatName, r.revision) };
    }),
    putSecondary: unary(async (req, ctx) => {
      const r = parseInput(putSecondary, req);
      if (r.value.length > MAX_SECONDARY_BYTES) tooLarge('value', r.value.length, MAX_SECONDARY_BYTES);
      const value = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      const { revision: rev, createdAt } = await genie.putSecondary(callerOf(ctx), { ...r, value });
      return { entry: toEntry({ key: r.key, sizeBytes: value.length, revision: rev, createdAt }), revision: rev };
    }),
    getSecondary: unary(async (req, ctx) => {
      const r = parseInput(getSecondary, req);
      const found = await genie.getSecondary(callerOf(ctx), r.sessionId, r.key);
      return { entry: toEntry(found), value: found.value };
    }),
    listSecondaryKeys: unary(async (req, ctx) => {
      const r = parseInput(listSecondaryKeys, req);
      const page = await genie.listSecondaryKeys(callerOf(ctx), r.sessionId, r.pageSize, r.pageToken);
      return { entries: page.items.map(toEntry), nextPageToken: page.nextPageToken };
    }),
  };
}
