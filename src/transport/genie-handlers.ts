import { z } from 'zod';
import type { GenieService, SessionView, UpdatePath } from '../genie/service.js';
import { MAX_SECONDARY_BYTES } from '../genie/service.js';
import { FIELD_NAME, MODEL_TYPE_NAME, STATE_OR_EVENT, type ModelTypeDef, type ModelTypeRow, type UpgradeStepDef } from '../genie/model-type.js';
import { parseActor, type Actor, type DialogueFormatName } from '../genie/dialogue-format.js';
import type { DialogueRow, SecondaryMeta } from '../storage/genie-repo.js';
import {
  DialogueFormat,
  type DialogueElement,
  type GenieSession,
  type ModelType,
  type SecondaryEntry,
  type UpgradeStep,
} from '../gen/parley/genie/v1/genie.js';
import { invalidArgument, quote, type FieldViolation } from '../errors.js';
import { isReservedKey } from '../keys.js';
import { parseInput } from '../validate.js';
import { pageSizeOf } from '../paging.js';
import { callerOf } from './auth.js';
import { optionalString, uuid } from './convert.js';
import { unary, type Handler } from './rpc.js';

// ---------------------------------------------------------------------------------------------------------
// Domain → proto

const toElement = (d: DialogueRow): DialogueElement => ({ actor: d.actor, actorText: d.actorText, timestamp: d.timestamp, event: d.event });

export const toSession = (v: SessionView): GenieSession => ({
  sessionId: v.session.id,
  modelType: v.session.modelType,
  schemaVersion: v.session.schemaVersion,
  state: v.session.state,
  dialogue: (v.dialogue ?? []).map(toElement),
  actor: v.session.actor,
  actorInput: v.session.actorInput,
  fields: v.session.fields,
  currentResponse: v.currentResponse && toElement(v.currentResponse),
  revision: v.session.revision,
  createTime: v.session.createdAt,
  updateTime: v.session.updatedAt,
  forkedFromSessionId: v.session.forkedFromSessionId ?? '',
  forkedFromRevision: v.session.forkedFromRevision ?? 0,
  expireTime: v.session.expireTime,
});

const toUpgradeStep = (s: UpgradeStepDef): UpgradeStep => {
  const base = { fromVersion: s.fromVersion, renameField: undefined, dropField: undefined, addField: undefined, mapStates: undefined };
  switch (s.kind) {
    case 'rename_field':
      return { ...base, renameField: { from: s.from, to: s.to } };
    case 'drop_field':
      return { ...base, dropField: { name: s.name } };
    case 'add_field':
      return { ...base, addField: { name: s.name, defaultValue: s.defaultValue } };
    case 'map_states':
      return { ...base, mapStates: { mapping: s.mapping } };
  }
};

export const toModelType = (m: ModelTypeRow): ModelType => ({
  name: m.name,
  schemaVersion: m.schemaVersion,
  jsonSchema: m.jsonSchema,
  stateMachine: m.stateMachine,
  upgrades: m.upgrades.map(toUpgradeStep),
  cacheTtlSeconds: m.cacheTtlSeconds,
  createTime: m.createdAt,
  sessionTtlSeconds: m.sessionTtlSeconds,
});

const toEntry = (m: SecondaryMeta): SecondaryEntry => ({ key: m.key, sizeBytes: m.sizeBytes, revision: m.revision, createTime: m.createdAt });

// ---------------------------------------------------------------------------------------------------------
// Request validation

const sessionId = uuid;
const revision = z.number().int().nonnegative('must not be negative');
const pageSize = z.number().int().nonnegative('must not be negative').transform(pageSizeOf);
const jsonObject = z.record(z.string(), z.unknown());
const fields = jsonObject.optional().transform((f) => f ?? {});
const actorOrEmpty = z.string().refine((a) => a === '' || parseActor(a) !== undefined, 'must be system, assistant or user');
const actor = z.string().refine((a) => parseActor(a) !== undefined, 'must be system, assistant or user');
const secondaryKey = z
  .string()
  .min(1, 'is required')
  .max(256, 'must be at most 256 characters')
  .refine((k) => !/[\u0000-\u001f\u007f]/.test(k), 'must not contain control characters');

const modelTypeShape = z.object({
  modelType: z.object({
    name: z.string().regex(MODEL_TYPE_NAME, 'must be 1–100 letters, digits, _ . or -, starting with a letter'),
    schemaVersion: z.number().int().min(1, 'must be 1 or more'),
    jsonSchema: jsonObject.optional(),
    stateMachine: z.object(
      {
        states: z.array(z.string()),
        initialState: z.string(),
        transitions: z.array(z.object({ fromState: z.string(), event: z.string(), toState: z.string(), actor: z.string() })),
      },
      { error: 'is required' },
    ),
    upgrades: z.array(z.unknown()),
    cacheTtlSeconds: z.number().int().min(0, 'must not be negative').max(30 * 86_400, 'must be at most 30 days'),
    sessionTtlSeconds: z.number().int().min(0, 'must not be negative').max(3650 * 86_400, 'must be at most 3650 days'),
  }, { error: 'is required' }),
});

/** The oneof of each step, checked by hand so violations name `model_type.upgrades[i]…` as AIP-193 does. */
function upgradeSteps(raw: unknown[]): UpgradeStepDef[] {
  const violations: FieldViolation[] = [];
  const steps: UpgradeStepDef[] = [];
  raw.forEach((r, i) => {
    const s = r as UpgradeStep;
    const at = `model_type.upgrades[${i}]`;
    const set = [s.renameField, s.dropField, s.addField, s.mapStates].filter((x) => x !== undefined).length;
    if (set !== 1) {
      violations.push({ field: at, description: 'exactly one of rename_field, drop_field, add_field or map_states is required' });
      return;
    }
    const fromVersion = s.fromVersion;
    if (s.renameField) steps.push({ fromVersion, kind: 'rename_field', from: s.renameField.from, to: s.renameField.to });
    else if (s.dropField) steps.push({ fromVersion, kind: 'drop_field', name: s.dropField.name });
    else if (s.addField) {
      if (s.addField.defaultValue === undefined) {
        violations.push({ field: `${at}.add_field.default_value`, description: 'is required (null_value for null)' });
      }
      steps.push({ fromVersion, kind: 'add_field', name: s.addField.name, defaultValue: s.addField.defaultValue ?? null });
    } else if (s.mapStates) {
      for (const from of Object.keys(s.mapStates.mapping)) {
        if (!STATE_OR_EVENT.test(from)) violations.push({ field: `${at}.map_states.mapping[${quote(from, 40)}]`, description: 'is not a valid state id' });
      }
      steps.push({ fromVersion, kind: 'map_states', mapping: { ...s.mapStates.mapping } });
    }
  });
  if (violations.length) throw invalidArgument(violations);
  return steps;
}

const getModelType = z.object({ name: z.string().min(1, 'is required'), schemaVersion: z.number().int().nonnegative('must not be negative') });
const listModelTypes = z.object({ name: optionalString, pageSize, pageToken: optionalString });
// A time already past is allowed: the session is then deleted by the next purge.
const expireTime = z.date().optional();
const createSession = z.object({ modelType: z.string().min(1, 'is required'), fields, expireTime });
const getSession = z.object({ sessionId, revision });
const updateSession = z.object({
  session: z.object({ sessionId, fields, actor: actorOrEmpty, actorInput: z.string(), expireTime }, { error: 'is required' }),
  updateMask: z.array(z.string()).optional(),
  expectedRevision: revision,
});
const deleteSession = z.object({ sessionId, expectedRevision: revision });
const listSessions = z.object({ modelType: optionalString, state: optionalString, pageSize, pageToken: optionalString });
const forkSession = z.object({ sessionId, revision });
/**
 * An event name as a transition names it. Every RPC that takes one (SendEvent, Chat's send_event, a
 * StreamUtterance that ends with an event) checks it the same way, so a name no transition can carry is
 * INVALID_ARGUMENT on `event`, and an error message quoting it stays short.
 */
export const eventName = z.string().regex(STATE_OR_EVENT, 'must be 1–100 letters, digits, _ . : or -');

const sendEvent = z.object({
  sessionId,
  event: eventName,
  actor: actorOrEmpty.transform((a) => (a === '' ? undefined : (a as Actor))),
  actorInput: z.string(),
  expectedRevision: revision,
});
const appendDialogue = z.object({ sessionId, actor: actor.transform((a) => a as Actor), actorText: z.string(), expectedRevision: revision });
const formats: Partial<Record<number, DialogueFormatName>> = {
  [DialogueFormat.DIALOGUE_FORMAT_CHAT]: 'CHAT',
  [DialogueFormat.DIALOGUE_FORMAT_YAML]: 'YAML',
  [DialogueFormat.DIALOGUE_FORMAT_JSON]: 'JSON',
  [DialogueFormat.DIALOGUE_FORMAT_PYTHON_REPR]: 'PYTHON_REPR',
};
const formatDialogue = z.object({
  sessionId,
  format: z.number().refine((f) => formats[f] !== undefined, 'must be CHAT, YAML, JSON or PYTHON_REPR'),
  revision,
});
const putSecondary = z.object({
  sessionId,
  key: secondaryKey,
  value: z.instanceof(Uint8Array).refine((v) => v.length <= MAX_SECONDARY_BYTES, `must be at most ${MAX_SECONDARY_BYTES} bytes (16 MiB)`),
  expectedRevision: revision,
});
const getSecondary = z.object({ sessionId, key: secondaryKey });
const listSecondaryKeys = z.object({ sessionId, pageSize, pageToken: optionalString });

/** Field-mask paths of UpdateSession; an unset mask means the whole `fields` object (AIP-134). */
function updatePaths(mask: string[] | undefined): UpdatePath[] {
  if (!mask || mask.length === 0) return [{ kind: 'fields' }];
  return mask.map((p) => {
    if (p === 'fields') return { kind: 'fields' };
    if (p === 'actor') return { kind: 'actor' };
    if (p === 'actor_input') return { kind: 'actor_input' };
    if (p === 'expire_time') return { kind: 'expire_time' };
    if (p.startsWith('fields.')) {
      const path = p.slice('fields.'.length).split('.');
      if (path.some(isReservedKey)) throw invalidArgument('update_mask', `unsupported path ${quote(p)}: the key __proto__ is reserved`);
      if (path.every((seg) => FIELD_NAME.test(seg))) return { kind: 'field', path };
    }
    throw invalidArgument('update_mask', `unsupported path ${quote(p)}: use fields, fields.<name>[.<name>…], actor, actor_input or expire_time (the state changes only through SendEvent)`);
  });
}

// ---------------------------------------------------------------------------------------------------------

export function genieHandlers(genie: GenieService): Record<string, Handler> {
  return {
    registerModelType: unary(async (req, ctx) => {
      const { modelType: m } = parseInput(modelTypeShape, req);
      const def: ModelTypeDef = {
        name: m.name,
        schemaVersion: m.schemaVersion,
        jsonSchema: m.jsonSchema,
        stateMachine: {
          states: m.stateMachine.states,
          initialState: m.stateMachine.initialState,
          transitions: m.stateMachine.transitions.map((t) => ({ ...t, actor: t.actor as Actor | '' })),
        },
        upgrades: upgradeSteps(m.upgrades),
        cacheTtlSeconds: m.cacheTtlSeconds,
        sessionTtlSeconds: m.sessionTtlSeconds,
      };
      return { modelType: toModelType(await genie.registerModelType(callerOf(ctx), def)) };
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
      return { session: toSession(await genie.createSession(callerOf(ctx), r.modelType, r.fields, r.expireTime)) };
    }),
    getSession: unary(async (req, ctx) => {
      const r = parseInput(getSession, req);
      return { session: toSession(await genie.getSession(callerOf(ctx), r.sessionId, r.revision)) };
    }),
    updateSession: unary(async (req, ctx) => {
      const r = parseInput(updateSession, req);
      const paths = updatePaths(r.updateMask);
      const values = { fields: r.session.fields, actor: r.session.actor as Actor | '', actorInput: r.session.actorInput, expireTime: r.session.expireTime };
      return { session: toSession(await genie.updateSession(callerOf(ctx), r.session.sessionId, paths, values, r.expectedRevision)) };
    }),
    deleteSession: unary(async (req, ctx) => {
      const r = parseInput(deleteSession, req);
      await genie.deleteSession(callerOf(ctx), r.sessionId, r.expectedRevision);
      return {};
    }),
    listSessions: unary(async (req, ctx) => {
      const r = parseInput(listSessions, req);
      const page = await genie.listSessions(callerOf(ctx), { modelType: r.modelType, state: r.state }, r.pageSize, r.pageToken);
      return { sessions: page.items.map(toSession), nextPageToken: page.nextPageToken };
    }),
    forkSession: unary(async (req, ctx) => {
      const r = parseInput(forkSession, req);
      return { session: toSession(await genie.forkSession(callerOf(ctx), r.sessionId, r.revision)) };
    }),
    sendEvent: unary(async (req, ctx) => {
      const r = parseInput(sendEvent, req);
      const { view, previousState } = await genie.sendEvent(callerOf(ctx), r);
      return { session: toSession(view), previousState };
    }),
    appendDialogue: unary(async (req, ctx) => {
      const r = parseInput(appendDialogue, req);
      return { session: toSession(await genie.appendDialogue(callerOf(ctx), r)) };
    }),
    formatDialogue: unary(async (req, ctx) => {
      const r = parseInput(formatDialogue, req);
      return { text: await genie.formatDialogue(callerOf(ctx), r.sessionId, formats[r.format] as DialogueFormatName, r.revision) };
    }),
    putSecondary: unary(async (req, ctx) => {
      const r = parseInput(putSecondary, req);
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
