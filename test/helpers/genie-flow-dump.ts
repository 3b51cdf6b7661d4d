/**
 * Writes values the way genie-flow does (VersionedModel.serialize, SecondaryStore.unpersisted_serialized),
 * so the migration tests read a dump in its own format rather than in ours.
 *
 * pydantic's model_dump_json is compact JSON (no spaces), keys in field order (GenieModel's fields first, then
 * the subclass's), non-ASCII as raw UTF-8 — what JSON.stringify writes for the values used here. A naive
 * datetime is `YYYY-MM-DDTHH:MM:SS[.ffffff]` (the fraction only when not zero), with no offset.
 */
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
