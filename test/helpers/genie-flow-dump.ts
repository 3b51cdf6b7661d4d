/**
 * Writes values the way genie-flow does (VersionedModel.serialize, SecondaryStore.unpersisted_serialized),
 * so the migration tests read a dump in its own format rather than in ours.
 *
 * pydantic's model_dump_json is compact JSON (no spaces), keys in field order (GenieModel's fields first, then
 * the subclass's), non-ASCII as raw UTF-8 — what JSON.stringify writes for the values used here. A naive
 * datetime is `YYYY-MM-DDTHH:MM:SS[.ffffff]` (the fraction only when not zero), with no offset.
 */
import { randomUUID } from 'node:crypto';
import snappy from 'snappyjs';

/** `{schema_version}:{0|1}:{json or raw snappy}` */
export function serialize(json: string, schemaVersion: number, compressed: boolean): Buffer {
  const payload = Buffer.from(json, 'utf8');
  return Buffer.concat([Buffer.from(`${schemaVersion}:${compressed ? 1 : 0}:`), compressed ? snappy.compress(payload) : payload]);
}

/** A secondary-storage hash value: `{class FQN}:` and the serialized model. */
export function serializeSecondary(fqn: string, json: string, schemaVersion: number, compressed: boolean): Buffer {
  return Buffer.concat([Buffer.from(`${fqn}:`), serialize(json, schemaVersion, compressed)]);
}

/** `datetime.now()` on a host `offsetMinutes` east of UTC, as pydantic writes it: local wall time, no offset. */
export function naiveTimestamp(instant: Date, offsetMinutes: number, micros = 0): string {
  const local = new Date(instant.getTime() + offsetMinutes * 60_000).toISOString().slice(0, 19);
  const fraction = instant.getUTCMilliseconds() * 1000 + micros;
  return fraction ? `${local}.${String(fraction).padStart(6, '0')}` : local;
}

export interface DumpElement {
  actor: string;
  timestamp: string;
  actor_text: string;
}

/** A GenieModel subclass's JSON as genie-flow's persist_model writes it (secondary_storage excluded). */
export function modelJson(m: {
  sessionId: string;
  state: string | number | null;
  dialogue?: DumpElement[];
  actor?: string | null;
  actorInput?: string;
  taskError?: string | null;
  /** The subclass's own fields, in declaration order. */
  fields?: Record<string, unknown>;
}): string {
  const base = {
    seed_data: null,
    state: m.state,
    session_id: m.sessionId,
    source_type: 0,
    target_type: 0,
    dialogue_persistence: 1,
    dialogue: m.dialogue ?? [],
    task_error: m.taskError ?? null,
    actor: m.actor ?? null,
    actor_input: m.actorInput ?? '',
  };
  return JSON.stringify({ ...base, ...m.fields });
}

/** Where genie-flow keeps a session's object and secondary storage. */
export const objectKey = (prefix: string, cls: string, id: string) => `${prefix}:object:${cls}:${id}`;
export const secondaryHashKey = (prefix: string, cls: string, id: string) => `${prefix}:secondary:${cls}:${id}`;

const USER_FQN = 'genie_flow.model.user.User';
const PERSISTENCE_FQN = 'genie_flow.model.persistence.Persistence';
/** The UTC offset (minutes) of the genie-flow host that wrote the dump's naive timestamps: UTC+02:00. */
export const DUMP_OFFSET = 120;

/**
 * A genie-flow dump: what its SessionLockManager leaves in Redis for an `Interview` app (mapped to a parley
 * type) and a `Survey` app (not mapped). Interview is at genie-flow schema version 1; one session is still
 * at version 0, from before its `name` field became `user_name`.
 */
export function genieFlowDump(prefix: string) {
  const t0 = new Date('2025-03-01T10:00:00.123Z');
  const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
  // Session ids are unique across a deployment's accounts: each dump has its own.
  const ulidId = randomUUID();
  const hexId = randomUUID().replace(/-/g, '');
  const legacyId = `legacy-${prefix}`;
  const [archived, survey, notSnappy] = [randomUUID(), randomUUID(), randomUUID()];
  const dialogueA = [
    { actor: 'assistant', timestamp: naiveTimestamp(at(0), DUMP_OFFSET, 456), actor_text: 'Welcome! What is your name?' },
    { actor: 'user', timestamp: naiveTimestamp(at(12), DUMP_OFFSET), actor_text: 'Ada — Ada Lovelace 🙂' },
    { actor: 'assistant', timestamp: naiveTimestamp(at(13.5), DUMP_OFFSET, 1), actor_text: 'Thanks, Ada.\nHow old are you?' },
  ];
  // pydantic writes a float 1.0 as `1.0`, which JSON.stringify never does: that part is written by hand.
  const jsonA = modelJson({ sessionId: ulidId, state: 'ask', dialogue: dialogueA, actor: 'assistant', actorInput: 'Thanks, Ada.\nHow old are you?', fields: { user_name: 'Ada', age: 36 } }).replace(/}$/, ',"score":1.0}');
  const userJson = '{"email":"ada@example.com","firstname":"Ada","lastname":"Lovelace","custom_properties":{"team":"analytical"}}';
  const strings = new Map<string, Buffer>([
    // Compressed (genie-flow's default), at the current schema version, with secondary storage.
    [objectKey(prefix, 'Interview', ulidId), serialize(jsonA, 1, true)],
    // Uncompressed, at the old schema version (field `name`), a dash-less UUID, an offset-aware timestamp.
    [
      objectKey(prefix, 'Interview', hexId),
      serialize(modelJson({ sessionId: hexId, state: 'intro', actor: 'assistant', dialogue: [{ actor: 'system', timestamp: '2025-03-02T08:00:00Z', actor_text: 'You are an interviewer.' }], fields: { name: 'Grace' } }), 0, false),
    ],
    // Not a UUID: imported under a UUIDv5; no dialogue, no actor yet.
    [objectKey(prefix, 'Interview', legacyId), serialize(modelJson({ sessionId: legacyId, state: 'intro', fields: { user_name: null, age: null } }), 1, true)],
    // Refused: a state the parley type does not have.
    [objectKey(prefix, 'Interview', archived), serialize(modelJson({ sessionId: archived, state: 'archived' }), 1, false)],
    // Refused: a class no --model-type maps.
    [objectKey(prefix, 'Survey', survey), serialize(modelJson({ sessionId: survey, state: 'q1' }), 0, true)],
    // Refused: flagged compressed, but not Snappy.
    [objectKey(prefix, 'Interview', notSnappy), Buffer.from('1:1:{"state":"intro"}')],
  ]);
  const hashes = new Map<string, Map<string, Buffer>>([
    [
      secondaryHashKey(prefix, 'Interview', ulidId),
      new Map([
        ['persistence', serializeSecondary(PERSISTENCE_FQN, '{"level":1}', 0, true)],
        ['user_info', serializeSecondary(USER_FQN, userJson, 0, false)],
      ]),
    ],
    // Outlives its object (secondary hashes never expire): nothing imports it.
    [secondaryHashKey(prefix, 'Interview', 'expired-session'), new Map([['persistence', serializeSecondary(PERSISTENCE_FQN, '{"level":0}', 0, true)]])],
    // genie-flow's progress records share the prefix and are no sessions.
    [`${prefix}:progress::${ulidId}`, new Map([['inv1:todo', Buffer.from('3')], ['inv1:done', Buffer.from('1')], ['inv1:tombstone', Buffer.from('f')]])],
  ]);
  return {
    strings,
    hashes,
    ids: { ulidId, hexId, legacyId, archived, survey, notSnappy },
    expected: {
      dialogueA: dialogueA.map((e, i) => ({ actor: e.actor, actorText: e.actor_text, timestamp: [at(0), at(12), at(13.5)][i]! })),
      userValue: `${USER_FQN}:0:0:${userJson}`,
      persistenceValue: `${PERSISTENCE_FQN}:0:0:{"level":1}`,
    },
  };
}
