/**
 * Model types: the state machine, the declarative upgrade steps and the rules that keep every registered
 * version reachable from the older ones. Pure: no I/O.
 */
import { z } from 'zod';
import { failedPrecondition, quote, type FieldViolation } from '../errors.js';
import { fieldPath } from '../field-path.js';
import { isoDate } from '../json-codec.js';
import { ACTORS, parseActor, type Actor } from './dialogue-format.js';
import { ownValue } from '../keys.js';

export interface TransitionDef {
  fromState: string;
  event: string;
  toState: string;
  /** '' when SendEvent must name the actor. */
  actor: Actor | '';
}

export interface StateMachineDef {
  states: string[];
  initialState: string;
  transitions: TransitionDef[];
}

export type UpgradeStepDef =
  | { fromVersion: number; kind: 'rename_field'; from: string; to: string }
  | { fromVersion: number; kind: 'drop_field'; name: string }
  | { fromVersion: number; kind: 'add_field'; name: string; defaultValue: unknown }
  | { fromVersion: number; kind: 'map_states'; mapping: Record<string, string> };

export interface ModelTypeDef {
  name: string;
  schemaVersion: number;
  /** undefined accepts any fields. */
  jsonSchema: Record<string, unknown> | undefined;
  stateMachine: StateMachineDef;
  upgrades: UpgradeStepDef[];
  cacheTtlSeconds: number;
  /** Retention: sessions idle longer than this are purged; 0 keeps them. */
  sessionTtlSeconds: number;
  /** The tokenizer encoding of new sessions' counts: one of TOKENIZER_ENCODINGS, or '' for the default. */
  tokenizerEncoding?: string | undefined;
}

export interface ModelTypeRow extends ModelTypeDef {
  createdAt: Date;
}

const upgradeStepSchema = z.discriminatedUnion('kind', [
  z.object({ fromVersion: z.number().int(), kind: z.literal('rename_field'), from: z.string(), to: z.string() }),
  z.object({ fromVersion: z.number().int(), kind: z.literal('drop_field'), name: z.string() }),
  z.object({ fromVersion: z.number().int(), kind: z.literal('add_field'), name: z.string(), defaultValue: z.unknown().transform((v) => v ?? null) }),
  z.object({ fromVersion: z.number().int(), kind: z.literal('map_states'), mapping: z.record(z.string(), z.string()) }),
]);
export const stateMachineSchema = z.object({
  states: z.array(z.string()),
  initialState: z.string(),
  transitions: z.array(z.object({ fromState: z.string(), event: z.string(), toState: z.string(), actor: z.union([z.enum(ACTORS), z.literal('')]) })),
});
export const upgradesSchema = z.array(upgradeStepSchema);

/** A registered version as JSON (a stored request's answer) comes back through this schema. */
export const modelTypeRowSchema = z
  .object({
  name: z.string(),
  schemaVersion: z.number().int(),
  jsonSchema: z.record(z.string(), z.unknown()).optional(),
  stateMachine: stateMachineSchema,
  upgrades: upgradesSchema,
  cacheTtlSeconds: z.number(),
  sessionTtlSeconds: z.number(),
  // Versions cached before encodings were kept have none: the default.
  tokenizerEncoding: z.string().default(''),
  createdAt: isoDate,
  })
  .transform((m): ModelTypeRow => ({ ...m, jsonSchema: m.jsonSchema, upgrades: m.upgrades.map((u) => (u.kind === 'add_field' ? { ...u, defaultValue: u.defaultValue } : u)) }));

/** What upgrades act on: the versioned part of a session. */
export interface VersionedData {
  schemaVersion: number;
  state: string;
  fields: Record<string, unknown>;
}

export const MODEL_TYPE_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,99}$/;
export const STATE_OR_EVENT = /^[A-Za-z0-9_.:-]{1,100}$/;
export const FIELD_NAME = /^[^\s.]{1,200}$/;

/**
 * Problems with a model type about to be registered on top of `previous` (the latest registered version
 * of the same name, if any). Field paths are relative to `model_type.`.
 */
export function modelTypeViolations(def: ModelTypeDef, previous: ModelTypeDef | undefined): FieldViolation[] {
  const v: FieldViolation[] = [];
  const add = (segments: ReadonlyArray<string | number>, description: string, suffix = '') =>
    v.push({ field: fieldPath(segments, 'model_type') + suffix, description });
  const m = def.stateMachine;
  const states = new Set<string>();
  m.states.forEach((s, i) => {
    if (!STATE_OR_EVENT.test(s)) add(['state_machine', 'states', i], 'must be 1–100 letters, digits, _ . : or -');
    else if (states.has(s)) add(['state_machine', 'states', i], `duplicate state ${JSON.stringify(s)}`);
    states.add(s);
  });
  if (m.states.length === 0) add(['state_machine', 'states'], 'at least one state is required');
  if (!states.has(m.initialState)) add(['state_machine', 'initial_state'], 'must be one of state_machine.states');
  const seen = new Set<string>();
  m.transitions.forEach((t, i) => {
    const at = ['state_machine', 'transitions', i];
    if (!states.has(t.fromState)) add([...at, 'from_state'], 'must be one of state_machine.states');
    if (!states.has(t.toState)) add([...at, 'to_state'], 'must be one of state_machine.states');
    if (!STATE_OR_EVENT.test(t.event)) add([...at, 'event_name'], 'must be 1–100 letters, digits, _ . : or -');
    if (t.actor !== '' && parseActor(t.actor) === undefined) add([...at, 'actor'], 'must be ACTOR_UNSPECIFIED, ACTOR_USER, ACTOR_ASSISTANT or ACTOR_SYSTEM');
    const key = `${t.fromState}\u0000${t.event}`;
    if (seen.has(key)) add(at, `a second transition for event ${JSON.stringify(t.event)} from ${JSON.stringify(t.fromState)}`);
    seen.add(key);
  });

  if (!previous && def.upgrades.length > 0) {
    add(['upgrades'], 'the first registered version of a type has nothing to upgrade from');
  }
  def.upgrades.forEach((step, i) => {
    const at = ['upgrades', i];
    if (previous && step.fromVersion !== previous.schemaVersion) {
      add([...at, 'from_version'], `must be ${previous.schemaVersion}, the latest registered version of ${def.name}`);
    }
    switch (step.kind) {
      case 'rename_field':
        if (!FIELD_NAME.test(step.from)) add([...at, 'rename_field', 'old_name'], 'must be a top-level field name');
        if (!FIELD_NAME.test(step.to)) add([...at, 'rename_field', 'new_name'], 'must be a top-level field name');
        break;
      case 'drop_field':
        if (!FIELD_NAME.test(step.name)) add([...at, 'drop_field', 'name'], 'must be a top-level field name');
        break;
      case 'add_field':
        if (!FIELD_NAME.test(step.name)) add([...at, 'add_field', 'name'], 'must be a top-level field name');
        break;
      case 'map_states':
        for (const [from, to] of Object.entries(step.mapping)) {
          if (!states.has(to)) add([...at, 'map_states', 'mapping'], `${quote(to)} is not a state of this version`, `[${quote(from, 40)}]`);
        }
        break;
    }
  });
  // Every state a stored session of the previous version can be in must land on a state of this one,
  // otherwise those sessions could not be read after the upgrade.
  if (previous && v.length === 0) {
    for (const s of previous.stateMachine.states) {
      const mapped = mapState(s, def.upgrades);
      if (!states.has(mapped)) {
        add(['upgrades'], `state ${JSON.stringify(s)} of version ${previous.schemaVersion} is not a state of version ${def.schemaVersion}; map it with map_states`);
      }
    }
  }
  return v;
}

/** Where `mapping` sends `state`; a state it does not name stays (own keys only: a state may be named `constructor`). */
function mappedState(mapping: Record<string, string>, state: string): string {
  const to = ownValue(mapping, state);
  return typeof to === 'string' ? to : state;
}

function mapState(state: string, steps: readonly UpgradeStepDef[]): string {
  let s = state;
  for (const step of steps) if (step.kind === 'map_states') s = mappedState(step.mapping, s);
  return s;
}

/** The transition `event` takes from `state`, if the machine allows it. */
export function findTransition(machine: StateMachineDef, state: string, event: string): TransitionDef | undefined {
  return machine.transitions.find((t) => t.fromState === state && t.event === event);
}

/**
 * Brings data stored at an older schema version up to the latest of `versions` (all registered versions of
 * the type, ascending) by running each newer version's steps in turn. Data from a version the server does
 * not know, newer or unregistered, has no path: FAILED_PRECONDITION naming both versions. Unlike the
 * reference's VersionedModel (ValueError for any mismatch) this never crashes the caller.
 */
export function upgrade(data: VersionedData, versions: readonly ModelTypeDef[], typeName: string): VersionedData {
  const latest = versions[versions.length - 1];
  if (!latest) throw failedPrecondition(`model type ${typeName} is not registered`, 'MODEL_TYPE_NOT_REGISTERED');
  if (data.schemaVersion === latest.schemaVersion) return data;
  const start = versions.findIndex((v) => v.schemaVersion === data.schemaVersion);
  if (data.schemaVersion > latest.schemaVersion || start < 0) {
    const why = data.schemaVersion > latest.schemaVersion ? 'is newer than any version' : 'has no upgrade path to the latest version';
    throw failedPrecondition(
      `session schema version ${data.schemaVersion} of model type ${typeName} ${why}: the server knows ${latest.schemaVersion}`,
      'SCHEMA_VERSION_UNKNOWN',
      [{ type: 'SCHEMA_VERSION', subject: `model_type/${typeName}/version/${data.schemaVersion}`, description: why }],
    );
  }
  let state = data.state;
  const fields: Record<string, unknown> = structuredClone(data.fields);
  for (const next of versions.slice(start + 1)) {
    for (const step of next.upgrades) {
      switch (step.kind) {
        case 'rename_field':
          if (Object.hasOwn(fields, step.from)) {
            fields[step.to] = fields[step.from];
            delete fields[step.from];
          }
          break;
        case 'drop_field':
          delete fields[step.name];
          break;
        case 'add_field':
          if (!Object.hasOwn(fields, step.name)) fields[step.name] = structuredClone(step.defaultValue);
          break;
        case 'map_states':
          state = mappedState(step.mapping, state);
          break;
      }
    }
  }
  if (!latest.stateMachine.states.includes(state)) {
    throw failedPrecondition(
      `session schema version ${data.schemaVersion} of model type ${typeName} upgrades to state ${JSON.stringify(state)}, which version ${latest.schemaVersion} the server knows does not have`,
      'UPGRADE_STATE_UNKNOWN',
      [{ type: 'STATE', subject: `model_type/${typeName}/version/${latest.schemaVersion}`, description: 'the upgraded state is not a state of this version' }],
    );
  }
  return { schemaVersion: latest.schemaVersion, state, fields };
}

/**
 * The stored (version, state) pairs that read as `state` at the latest version, so a list filtered by state
 * finds sessions not yet written back at the new version.
 */
export function storedStatesFor(state: string, versions: readonly ModelTypeDef[]): Array<{ schemaVersion: number; states: string[] }> {
  const out: Array<{ schemaVersion: number; states: string[] }> = [];
  versions.forEach((v, i) => {
    const later = versions.slice(i + 1).flatMap((n) => n.upgrades);
    const states = v.stateMachine.states.filter((s) => mapState(s, later) === state);
    if (states.length) out.push({ schemaVersion: v.schemaVersion, states });
  });
  return out;
}
