import type { Knex } from 'knex';
import { z } from 'zod';
import { isoDate } from '../json-codec.js';
import { fingerprintOf } from '../fingerprint.js';
import { ConstraintViolation } from '../ports/constraint-violation.js';
import type { Tx } from '../ports/unit-of-work.js';
import { actorSchema, type SecondaryMeta } from '../genie/store.js';
import type { ImportedSession, LogNotes, StoredRevision, TransferStore } from '../genie/transfer.js';
import { isUniqueViolation, type Db } from './db.js';
import { jsonb, storedEventsJson } from './genie-event-log.js';
import { knexOf } from './knex-tx.js';

const int = z.coerce.number();
const json = (v: unknown) => JSON.stringify(v);

const revisionRow = z
  .object({
    revision: int,
    schema_version: int,
    state: z.string(),
    actor: z.union([actorSchema, z.literal('')]),
    actor_input: z.string(),
    fields: jsonb(z.record(z.string(), z.unknown())),
    dialogue_length: int,
    update_time: isoDate,
  })
  .transform(
    (r): StoredRevision => ({
      revision: r.revision,
      schemaVersion: r.schema_version,
      state: r.state,
      actor: r.actor,
      actorInput: r.actor_input,
      fields: r.fields,
      dialogueLength: r.dialogue_length,
      updateTime: r.update_time,
    }),
  );

/** A page of revisions, each whole: what a revision row leaves out is put back as SessionStore.sessionAt does. */
const REVISIONS = `
SELECT r.revision, r.schema_version, r.state, r.actor, r.dialogue_length, r.created_at AS update_time,
  coalesce(r.actor_input, d.actor_text) AS actor_input,
  coalesce(r.fields, (
    SELECT f.fields FROM genie_session_revisions f
    WHERE f.session_id = r.session_id AND f.revision < r.revision AND f.fields IS NOT NULL
    ORDER BY f.revision DESC LIMIT 1)) AS fields
FROM genie_session_revisions r
LEFT JOIN genie_dialogue d ON r.actor_input IS NULL AND d.session_id = r.session_id AND d.seq = r.dialogue_length
WHERE r.session_id = ? AND r.revision > ? AND r.revision <= ?
ORDER BY r.revision
LIMIT ?`;

/** Only the events whose notes an export carries, and only those notes (never their text). */
const NOTES = `
SELECT c.revision, e->>'type' AS type, e->'seq' AS seq, e->>'utteranceId' AS utterance_id, e->'updateMask' AS update_mask
FROM session_commits c CROSS JOIN LATERAL jsonb_array_elements(c.events) e
WHERE c.session_id = ? AND c.revision > ? AND c.revision <= ?
  AND ((e->>'type' = 'dialogue_appended' AND e->'utteranceId' IS NOT NULL) OR e->>'type' = 'fields_updated')`;

const noteRow = z.object({
  revision: int,
  type: z.string(),
  seq: z.unknown(),
  utterance_id: z.string().nullish(),
  update_mask: jsonb(z.array(z.string())).nullish(),
});

const secondaryMetaRow = z
  .object({ key: z.string(), size_bytes: int, revision: int, created_at: isoDate })
  .transform((r): SecondaryMeta => ({ key: r.key, sizeBytes: r.size_bytes, revision: r.revision, createdAt: r.created_at }));

/** Rows per multi-row insert, and the bytes of values it may carry. */
const BATCH_ROWS = 500;
const BATCH_BYTES = 4 * 1024 * 1024;

/** `items` in consecutive batches of at most BATCH_ROWS rows and (but for a single large row) BATCH_BYTES. */
function* batches<T>(items: readonly T[], size: (item: T) => number): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const n = size(item);
    if (batch.length && (batch.length >= BATCH_ROWS || bytes + n > BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += n;
  }
  if (batch.length) yield batch;
}

/** Export's reads and import's write, over Postgres. */
export class KnexTransferStore implements TransferStore {
  constructor(private readonly db: Db) {}

  async revisions(sessionId: string, after: number, upTo: number, limit: number): Promise<StoredRevision[]> {
    const { rows } = (await this.db.raw(REVISIONS, [sessionId, after, upTo, limit])) as { rows: unknown[] };
    return rows.map((r) => revisionRow.parse(r));
  }

  async logNotes(sessionId: string, after: number, upTo: number): Promise<LogNotes> {
    const { rows } = (await this.db.raw(NOTES, [sessionId, after, upTo])) as { rows: unknown[] };
    const notes: LogNotes = { updateMasks: new Map(), utteranceIds: new Map() };
    for (const row of rows) {
      const r = noteRow.parse(row);
      if (r.type === 'fields_updated' && r.update_mask) notes.updateMasks.set(r.revision, r.update_mask);
      const seq = z.coerce.number().int().safeParse(r.seq);
      if (r.type === 'dialogue_appended' && r.utterance_id && seq.success) notes.utteranceIds.set(seq.data, r.utterance_id);
    }
    return notes;
  }

  async secondaryMetas(sessionId: string, after: { revision: number; key: string }, upToRevision: number, limit: number): Promise<SecondaryMeta[]> {
    const rows = await this.db('genie_secondary')
      .where({ session_id: sessionId })
      .andWhereRaw('(revision, key) > (?, ?)', [after.revision, after.key])
      .andWhere('revision', '<=', upToRevision)
      .select('key', 'size_bytes', 'revision', 'created_at')
      .orderBy([{ column: 'revision' }, { column: 'key' }])
      .limit(limit);
    return rows.map((r) => secondaryMetaRow.parse(r));
  }

  async idTaken(sessionId: string, tx: Tx): Promise<boolean> {
    return !!(await knexOf(tx)('genie_sessions').where({ id: sessionId }).first('id'));
  }

  async insertImported(s: ImportedSession, tx: Tx): Promise<void> {
    const trx = knexOf(tx);
    try {
      await insertAll(trx, s);
    } catch (err) {
      if (isUniqueViolation(err)) throw new ConstraintViolation('unique');
      throw err;
    }
  }
}

async function insertAll(trx: Knex.Transaction, s: ImportedSession): Promise<void> {
  const h = s.head;
  await trx('genie_sessions').insert({
    id: h.id,
    account_id: h.accountId,
    model_type: h.modelType,
    schema_version: h.schemaVersion,
    state: h.state,
    actor: h.actor,
    actor_input: h.actorInput,
    fields: json(h.fields),
    revision: h.revision,
    dialogue_length: h.dialogueLength,
    dialogue_token_count: h.dialogueTokenCount,
    token_encoding: h.tokenEncoding,
    forked_from_session_id: h.forkedFromSessionId ?? null,
    forked_from_revision: h.forkedFromRevision ?? null,
    expire_time: h.expireTime ?? null,
    end_user_id: h.endUserId ?? null,
    labels: json(h.labels),
    created_at: h.createdAt,
    updated_at: h.updatedAt,
  });
  // Revisions as the write path stores them: actor_input NULL when it is the text of the element at the
  // revision's dialogue_length, fields NULL when they equal the previous revision's.
  const text = (seq: number) => s.dialogue[seq - 1]?.actorText;
  let previous: string | undefined;
  const revisions = s.revisions.map((r) => {
    const print = fingerprintOf(r.fields);
    const sameFields = previous === print;
    previous = print;
    const implied = r.dialogueLength > 0 && text(r.dialogueLength) === r.actorInput;
    return {
      session_id: h.id,
      revision: r.revision,
      schema_version: r.schemaVersion,
      state: r.state,
      actor: r.actor,
      actor_input: implied ? null : r.actorInput,
      fields: sameFields ? null : json(r.fields),
      dialogue_length: r.dialogueLength,
      dialogue_token_count: r.dialogueTokenCount,
      created_at: r.updateTime,
    };
  });
  for (const b of batches(revisions, (r) => (r.actor_input?.length ?? 0) + (r.fields?.length ?? 0))) await trx('genie_session_revisions').insert(b);
  const dialogue = s.dialogue.map((d) => ({
    session_id: h.id,
    seq: d.seq,
    actor: d.actor,
    actor_text: d.actorText,
    event: d.event,
    timestamp: d.timestamp,
    revision: d.revision,
    token_count: d.tokenCount,
  }));
  for (const b of batches(dialogue, (d) => d.actor_text.length)) await trx('genie_dialogue').insert(b);
  for (const v of s.secondary) {
    await trx('genie_secondary').insert({ session_id: h.id, key: v.key, value: v.value, size_bytes: v.sizeBytes, revision: v.revision, created_at: v.createdAt });
  }
  // The log in its stored form: text an element holds is left out of the events that repeat it.
  const elements = new Map(s.dialogue.map((d) => [d.seq, d]));
  const commits = s.log.map((c) => ({ session_id: h.id, revision: c.revision, events: storedEventsJson(c.events, elements) }));
  for (const b of batches(commits, (c) => c.events.length)) await trx('session_commits').insert(b);
}
