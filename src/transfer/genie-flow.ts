/**
 * genie-flow's Redis objects, read and mapped into the records of an ImportSession. Pure: no I/O, no clock.
 *
 * What genie-flow writes (its SessionLockManager and VersionedModel):
 * - `{prefix}:object:{Class}:{session_id}`, a string: `{schema_version}:{0|1}:{payload}`, where the payload
 *   is the model's pydantic JSON (secondary_storage and computed fields left out), as a raw Snappy block when
 *   the flag is 1 (python-snappy's `compress`: no stream framing). It expires (the object store's TTL).
 * - `{prefix}:secondary:{Class}:{session_id}`, a hash, written once per key and never expiring: each field is
 *   a key of the model's secondary storage, each value `{class FQN}:{schema_version}:{0|1}:{payload}`.
 * - Keys this reader never touches: `{prefix}:progress::{session_id}` (running tasks), `lock:{session_id}`
 *   (python-redis-lock, unprefixed) and the `update:session` set (the MongoDB sync's queue).
 *
 * The model JSON holds the GenieModel's own fields (seed_data, state, session_id, source_type, target_type,
 * dialogue_persistence, dialogue, task_error, actor, actor_input) and then the subclass's; the subclass's
 * become the parley session's `fields`, the engine's bookkeeping (seed_data, source_type, target_type,
 * dialogue_persistence, task_error) has no parley counterpart and is left out.
 *
 * Where genie-flow's behaviour is a bug, this reads what it meant:
 * - Dialogue timestamps are `datetime.now()`: naive local time of the genie-flow host, serialized without an
 *   offset. They are read at the UTC offset the caller names (`naiveOffsetMinutes`, default UTC); timestamps
 *   that carry an offset keep it.
 * - Its container reads `object_compression` as `… or True`, so `false` still compresses: real dumps are
 *   mostly compressed, and both flags are read here.
 * - Its `deserialize` treats any flag but `1` as uncompressed and its `int()` accepts ` 1` or `1_0` as a
 *   version; here the version is digits and the flag is `0` or `1`, anything else is a malformed value.
 */
import { createHash } from 'node:crypto';
import snappy from 'snappyjs';
import { ACTORS, parseActor, type Actor as ActorName } from '../genie/dialogue-format.js';
import { MAX_FIELDS_BYTES, MAX_SECONDARY_BYTES, MAX_TEXT_BYTES } from '../genie/service.js';
import { setOwn } from '../keys.js';
import { Actor, type SessionRecord } from '../gen/parley/genie/v1/genie.js';

/** ImportSession's bounds: its records in all, its elements and its secondary values. */
export const MAX_IMPORT_BYTES = 64 * 1024 * 1024;
export const MAX_IMPORT_ELEMENTS = 100_000;
export const MAX_IMPORT_SECONDARY = 1_000;

/** Why a session is not imported: a stable kind (the summary counts by it) and a short, clipped detail. */
export type RefusalKind = 'unmapped-class' | 'unknown-state' | 'malformed' | 'too-large' | 'refused-by-server' | 'id-taken' | 'gone';

export class Refusal extends Error {
  constructor(
    readonly kind: RefusalKind,
    message: string,
  ) {
    super(message);
    this.name = 'Refusal';
  }
}

const malformed = (what: string) => new Refusal('malformed', what);

/** A JSON-quoted, clipped copy of a value from the dump, for a refusal's reason. */
export function show(value: string, max = 60): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max - 1)}…` : value);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function text(bytes: Uint8Array, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw malformed(`${what} is not valid UTF-8`);
  }
}

/** `{prefix}:object:{Class}:{session_id}` split; undefined when the key is not one (class names are identifiers). */
export function parseObjectKey(key: string, prefix: string): { className: string; sessionId: string } | undefined {
  const head = `${prefix}:object:`;
  if (!key.startsWith(head)) return undefined;
  const m = /^([A-Za-z_][A-Za-z0-9_]*):(.+)$/s.exec(key.slice(head.length));
  return m ? { className: m[1]!, sessionId: m[2]! } : undefined;
}

export const secondaryKey = (prefix: string, className: string, sessionId: string) => `${prefix}:secondary:${className}:${sessionId}`;

/** The SCAN pattern of every object under `prefix`, glob characters in the prefix escaped. */
export const objectPattern = (prefix: string) => `${prefix.replace(/[*?[\]\\]/g, '\\$&')}:object:*`;

export interface Envelope {
  schemaVersion: number;
  compressed: boolean;
  /** The model's JSON text, decompressed. */
  json: string;
}

/** `{schema_version}:{0|1}:{payload}` → the JSON text, within `maxBytes` decompressed. */
export function decodeEnvelope(value: Buffer, what: string, maxBytes = MAX_IMPORT_BYTES): Envelope {
  const colon = value.indexOf(0x3a);
  const version = colon > 0 && colon <= 9 ? value.subarray(0, colon).toString('latin1') : '';
  if (!/^\d{1,9}$/.test(version)) throw malformed(`${what} does not start with a schema version and ':'`);
  const flag = value[colon + 1];
  if ((flag !== 0x30 && flag !== 0x31) || value[colon + 2] !== 0x3a) throw malformed(`${what} has no compression flag 0 or 1 after its schema version`);
  const payload = value.subarray(colon + 3);
  const compressed = flag === 0x31;
  let bytes: Buffer = payload;
  if (compressed) {
    const length = snappyLength(payload);
    if (length === undefined) throw malformed(`${what} is flagged compressed but is not a Snappy block`);
    if (length > maxBytes) throw new Refusal('too-large', `${what} decompresses to more than ${maxBytes} bytes`);
    bytes = snappy.uncompress(payload, maxBytes);
  } else if (payload.length > maxBytes) {
    throw new Refusal('too-large', `${what} is over ${maxBytes} bytes`);
  }
  return { schemaVersion: Number(version), compressed, json: text(bytes, what) };
}

/**
 * The length a raw Snappy block decompresses to, after walking every tag of it; undefined when it is not a
 * whole, valid block. snappyjs trusts its input — a literal whose 4-byte length reads negative walks
 * backwards forever, a copy past the stated length is dropped silently, a short block leaves zeros — so
 * nothing reaches it unchecked. The walk reads no data bytes: it costs a fraction of the decompression.
 */
export function snappyLength(block: Uint8Array): number | undefined {
  let pos = 0;
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    if (pos >= block.length || shift > 28) return undefined;
    const b = block[pos++]!;
    length += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
  }
  if (length > 0xffffffff) return undefined;
  let out = 0;
  while (pos < block.length) {
    const tag = block[pos++]!;
    let len: number;
    if ((tag & 3) === 0) {
      len = tag >>> 2;
      if (len >= 60) {
        const n = len - 59;
        if (pos + n > block.length) return undefined;
        len = 0;
        for (let k = 0; k < n; k++) len += block[pos + k]! * 2 ** (8 * k);
        pos += n;
      }
      len += 1;
      if (pos + len > block.length) return undefined;
      pos += len;
    } else {
      let offset: number;
      if ((tag & 3) === 1) {
        if (pos + 1 > block.length) return undefined;
        len = ((tag >>> 2) & 7) + 4;
        offset = ((tag >>> 5) << 8) | block[pos]!;
        pos += 1;
      } else if ((tag & 3) === 2) {
        if (pos + 2 > block.length) return undefined;
        len = (tag >>> 2) + 1;
        offset = block[pos]! | (block[pos + 1]! << 8);
        pos += 2;
      } else {
        if (pos + 4 > block.length) return undefined;
        len = (tag >>> 2) + 1;
        offset = block[pos]! + block[pos + 1]! * 2 ** 8 + block[pos + 2]! * 2 ** 16 + block[pos + 3]! * 2 ** 24;
        pos += 4;
      }
      if (offset === 0 || offset > out) return undefined;
    }
    out += len;
    if (out > length) return undefined;
  }
  return out === length ? length : undefined;
}

/** A pydantic datetime: ISO 8601 with `T`, up to microseconds, offset `Z`, `±HH:MM` or none (naive). */
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})?$/;

/** A timestamp as an instant (millisecond precision: parley's); a naive one at `naiveOffsetMinutes` east of UTC. */
export function parseTimestamp(value: string, naiveOffsetMinutes: number): Date | undefined {
  const m = TIMESTAMP.exec(value);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const ms = Number((m[7] ?? '0').padEnd(6, '0').slice(0, 3));
  const utc = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  const check = new Date(utc);
  // Date.UTC rolls 31 February over into March; a real date reads back as written.
  if (y < 1 || check.getUTCFullYear() !== y || check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) return undefined;
  const zone = m[8];
  let offset = naiveOffsetMinutes;
  if (zone === 'Z') offset = 0;
  else if (zone) offset = (zone.startsWith('-') ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
  return new Date(utc - offset * 60_000);
}

/** `+HH:MM`, `-HH:MM` or `Z` → minutes east of UTC; undefined when it is none of them. */
export function parseOffset(value: string): number | undefined {
  if (value === 'Z') return 0;
  const m = /^([+-])(\d{2}):(\d{2})$/.exec(value);
  if (!m || Number(m[2]) > 14 || Number(m[3]) > 59) return undefined;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

export interface GenieFlowElement {
  actor: ActorName;
  actorText: string;
  timestamp: Date;
}

/** One genie-flow session, decoded: the object and its secondary storage. */
export interface GenieFlowSession {
  className: string;
  /** As genie-flow keys it. */
  sessionId: string;
  schemaVersion: number;
  /** The state's value: genie-flow allows a string or an integer; an integer reads as its decimal digits. */
  state: string;
  /** undefined before anyone spoke. */
  actor: ActorName | undefined;
  actorInput: string;
  dialogue: GenieFlowElement[];
  /** The subclass's own fields, in a null-prototype object. */
  fields: Record<string, unknown>;
}

/** GenieModel's own keys: mapped to the session's state, dialogue and actor, or bookkeeping left out. */
const BASE_KEYS = new Set([
  'seed_data',
  'state',
  'session_id',
  'source_type',
  'target_type',
  'dialogue_persistence',
  'dialogue',
  'task_error',
  'actor',
  'actor_input',
  'secondary_storage',
]);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const utf8Bytes = (s: string) => Buffer.byteLength(s, 'utf8');

/** The object's value (already out of its envelope) as a session; refuses what genie-flow itself could not load. */
export function parseModel(env: Envelope, key: { className: string; sessionId: string }, naiveOffsetMinutes: number): GenieFlowSession {
  let model: unknown;
  try {
    model = JSON.parse(env.json);
  } catch {
    throw malformed('the object is not JSON');
  }
  if (!isObject(model)) throw malformed('the object is not a JSON object');
  const get = (k: string): unknown => (Object.hasOwn(model, k) ? model[k] : undefined);

  const sessionId = get('session_id');
  if (sessionId !== key.sessionId) throw malformed('its session_id is not the one in its key');

  const rawState = get('state');
  let state: string;
  if (typeof rawState === 'string') state = rawState;
  else if (typeof rawState === 'number' && Number.isSafeInteger(rawState)) state = String(rawState);
  else if (rawState === null || rawState === undefined) throw new Refusal('unknown-state', 'it has no state');
  else throw malformed('its state is neither a string nor an integer');

  const rawActor = get('actor') ?? null;
  let actor: ActorName | undefined;
  if (rawActor !== null) {
    actor = typeof rawActor === 'string' ? parseActor(rawActor) : undefined;
    if (!actor) throw malformed(`its actor ${typeof rawActor === 'string' ? show(rawActor, 20) : 'value'} is not one of ${ACTORS.join(', ')}`);
  }
  const actorInput = get('actor_input') ?? '';
  if (typeof actorInput !== 'string') throw malformed('its actor_input is not a string');
  if (utf8Bytes(actorInput) > MAX_TEXT_BYTES) throw new Refusal('too-large', `its actor_input is over ${MAX_TEXT_BYTES} bytes`);

  const rawDialogue = get('dialogue') ?? [];
  if (!Array.isArray(rawDialogue)) throw malformed('its dialogue is not a list');
  if (rawDialogue.length > MAX_IMPORT_ELEMENTS) throw new Refusal('too-large', `its dialogue has more than ${MAX_IMPORT_ELEMENTS} elements`);
  const dialogue = rawDialogue.map((e: unknown, i): GenieFlowElement => {
    const at = `dialogue[${i}]`;
    if (!isObject(e)) throw malformed(`${at} is not an object`);
    const a = Object.hasOwn(e, 'actor') && typeof e.actor === 'string' ? parseActor(e.actor) : undefined;
    if (!a) throw malformed(`${at}.actor is not one of ${ACTORS.join(', ')}`);
    const actorText = Object.hasOwn(e, 'actor_text') ? e.actor_text : undefined;
    if (typeof actorText !== 'string') throw malformed(`${at}.actor_text is not a string`);
    if (utf8Bytes(actorText) > MAX_TEXT_BYTES) throw new Refusal('too-large', `${at}.actor_text is over ${MAX_TEXT_BYTES} bytes`);
    const ts = Object.hasOwn(e, 'timestamp') && typeof e.timestamp === 'string' ? parseTimestamp(e.timestamp, naiveOffsetMinutes) : undefined;
    if (!ts) throw malformed(`${at}.timestamp is not an ISO 8601 date and time`);
    return { actor: a, actorText, timestamp: ts };
  });

  const fields = Object.create(null) as Record<string, unknown>;
  for (const k of Object.keys(model)) if (!BASE_KEYS.has(k)) setOwn(fields, k, model[k]);
  if (utf8Bytes(JSON.stringify(fields)) > MAX_FIELDS_BYTES) throw new Refusal('too-large', `its fields are over ${MAX_FIELDS_BYTES} bytes as JSON`);

  return { className: key.className, sessionId: key.sessionId, schemaVersion: env.schemaVersion, state, actor, actorInput, dialogue, fields };
}

/** A secondary-storage value as parley keeps it: genie-flow's own serialization, uncompressed. */
export interface SecondaryValue {
  key: string;
  value: Buffer;
}

/**
 * One field of the secondary hash. The value is kept in genie-flow's serialization with the compression
 * undone (`{class FQN}:{schema_version}:0:{json}`): parley's secondary values are opaque bytes, and this
 * form still names the class and version the application needs to load it (its SecondaryStore reads it as
 * it is), while any other reader finds plain JSON after the third `:`.
 */
export function decodeSecondary(field: Buffer, value: Buffer): SecondaryValue {
  const key = text(field, 'a secondary storage key');
  // parley's rule for secondary keys: 1–256 characters, no control characters.
  // eslint-disable-next-line no-control-regex
  if (key.length === 0 || key.length > 256 || /[\u0000-\u001f\u007f-\u009f]/.test(key)) throw malformed(`secondary storage key ${show(key, 40)} is not 1–256 characters without control characters`);
  const what = `secondary storage value ${show(key, 40)}`;
  const colon = value.indexOf(0x3a);
  const fqn = colon > 0 && colon <= 1000 ? value.subarray(0, colon).toString('latin1') : '';
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(fqn)) throw malformed(`${what} does not start with a class name and ':'`);
  const env = decodeEnvelope(value.subarray(colon + 1), what, MAX_SECONDARY_BYTES);
  try {
    if (!isObject(JSON.parse(env.json))) throw new Error('not an object');
  } catch {
    throw malformed(`${what} is not a JSON object`);
  }
  const out = Buffer.from(`${fqn}:${env.schemaVersion}:0:${env.json}`, 'utf8');
  if (out.length > MAX_SECONDARY_BYTES) throw new Refusal('too-large', `${what} is over ${MAX_SECONDARY_BYTES} bytes`);
  return { key, value: out };
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
/** The namespace of the name-based ids of genie-flow sessions whose id is not a UUID. */
const GENIE_FLOW_NAMESPACE = Buffer.from('4486e4cccf55465bb0141064ec16c77e', 'hex');

/**
 * The parley id of a genie-flow session: its own id when that is a UUID (genie-flow makes them from ULIDs;
 * written with or without dashes, any case), in canonical form; otherwise a UUIDv5 of `{Class}:{session_id}`,
 * so every run maps the same session to the same id and a second import of it is ALREADY_EXISTS.
 */
export function parleySessionId(className: string, sessionId: string): string {
  let hex: string;
  if (UUID.test(sessionId) && (sessionId.length === 32 || /^.{8}-.{4}-.{4}-.{4}-.{12}$/.test(sessionId))) {
    hex = sessionId.replace(/-/g, '').toLowerCase();
  } else {
    const h = createHash('sha1').update(GENIE_FLOW_NAMESPACE).update(`${className}:${sessionId}`, 'utf8').digest();
    h[6] = (h[6]! & 0x0f) | 0x50;
    h[8] = (h[8]! & 0x3f) | 0x80;
    hex = h.subarray(0, 16).toString('hex');
  }
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The parley model type (at one schema version) a class's sessions become. */
export interface Target {
  modelType: string;
  schemaVersion: number;
  states: ReadonlySet<string>;
  tokenizerEncoding: string;
}

const ACTOR_ENUM: Readonly<Record<ActorName, Actor>> = { user: Actor.ACTOR_USER, assistant: Actor.ACTOR_ASSISTANT, system: Actor.ACTOR_SYSTEM };

/**
 * The records of one ImportSession: a header, one revision (genie-flow keeps no history), every element and
 * secondary value, a trailer. genie-flow records no creation or update time and no time for secondary
 * values: the session is taken as created at its first utterance (the import's `now` without one), updated
 * at its latest, and its secondary values as stored at creation.
 */
export function toRecords(s: GenieFlowSession, secondary: readonly SecondaryValue[], target: Target, now: Date): SessionRecord[] {
  if (!target.states.has(s.state)) throw new Refusal('unknown-state', `state ${show(s.state, 40)} is not a state of ${target.modelType} version ${target.schemaVersion}`);
  if (secondary.length > MAX_IMPORT_SECONDARY) throw new Refusal('too-large', `its secondary storage has more than ${MAX_IMPORT_SECONDARY} values`);
  let first = s.dialogue.length ? Infinity : now.getTime();
  let last = -Infinity;
  for (const e of s.dialogue) {
    first = Math.min(first, e.timestamp.getTime());
    last = Math.max(last, e.timestamp.getTime());
  }
  const createTime = new Date(first);
  const updateTime = new Date(Math.max(first, last));
  const sessionId = parleySessionId(s.className, s.sessionId);
  const header: SessionRecord = {
    header: {
      // genie-flow has no labels.
      labels: {},
      sessionId,
      modelType: target.modelType,
      schemaVersion: target.schemaVersion,
      state: s.state,
      createTime,
      updateTime,
      expireTime: undefined,
      endUserId: '',
      forkedFromSessionId: '',
      forkedFromRevision: 0,
      tokenizerEncoding: target.tokenizerEncoding,
      revision: 1,
      revisionCount: 1,
    },
  };
  const revision: SessionRecord = {
    revision: {
      revision: 1,
      schemaVersion: target.schemaVersion,
      state: s.state,
      actor: s.actor ? ACTOR_ENUM[s.actor] : Actor.ACTOR_UNSPECIFIED,
      actorInput: s.actorInput,
      fields: s.fields,
      dialogueLength: s.dialogue.length,
      updateTime,
      updateMask: [],
    },
  };
  const elements = s.dialogue.map(
    (e, i): SessionRecord => ({
      element: { index: i + 1, actor: ACTOR_ENUM[e.actor], actorText: e.actorText, timestamp: e.timestamp, eventName: '', revision: 1, tokenCount: 0, utteranceId: '' },
    }),
  );
  const values = [...secondary]
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map((v): SessionRecord => ({ secondary: { key: v.key, value: v.value, revision: 1, createTime } }));
  const trailer: SessionRecord = { trailer: { revisionCount: 1, elementCount: elements.length, secondaryCount: values.length } };
  return [header, revision, ...elements, ...values, trailer];
}
