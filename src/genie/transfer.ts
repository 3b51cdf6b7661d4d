/**
 * Moving a session between deployments: ExportSession reads a session as records, ImportSession writes
 * records back as a session.
 *
 * An export is a header, then each exported revision followed by what it added (its dialogue elements by
 * index, then its secondary values by key; the first exported revision brings everything the session had at
 * it), then a trailer counting what came before. Everything below a session's current revision is immutable
 * (revisions, elements, values), so an export read in pages without a transaction is the session as it was
 * at the revision the export started from; only a deletion can cut it short, and then the export fails
 * (NOT_FOUND) instead of ending with a trailer.
 *
 * An import checks each record as it arrives (order, counts, limits, the model type's states and JSON
 * Schema) and holds them, within IMPORT_LIMITS, until the trailer; then it writes the session in one
 * transaction. Holding rather than writing as records arrive keeps a transaction (and, embedded, the one
 * database connection) from waiting on a client's stream: nothing is written before the import is known to
 * be whole, and a stream that is cut, idle or refused leaves nothing to roll back.
 *
 * Values are moved as stored: each revision at the schema version it was written at, never upgraded, so the
 * importing account needs every version a revision names; reads upgrade the import exactly as they upgrade
 * the original. Token counts are not moved: every element is counted again in the session's encoding, so a
 * hostile import cannot skew a token budget. The event log that WatchSession replays is rebuilt from the
 * records, revision by revision, as the write RPCs would have logged them (see logOf).
 */
import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Principal } from '../principal.js';
import { AppError, alreadyExists, failedPrecondition, invalidArgument, notFound, quote, resourceExhausted } from '../errors.js';
import { fingerprintOf } from '../fingerprint.js';
import { isConstraintViolation } from '../ports/constraint-violation.js';
import { zodCodec } from '../json-codec.js';
import type { Tx, UnitOfWork } from '../ports/unit-of-work.js';
import type { Actor } from './dialogue-format.js';
import { dialogueAppended, fieldsUpdated, secondaryPut, sessionCreated, stateChanged, type SessionEvent } from './events.js';
import { fieldViolations } from './json-schema.js';
import { upgrade, type ModelTypeRow } from './model-type.js';
import { genieRequestKey } from './rules.js';
import { storedSessionSchema, type DialogueRow, type ModelTypeStore, type SecondaryMeta, type SessionStore, type StoredSession } from './store.js';
import { DEFAULT_ENCODING, countTokens, type TokenizerEncoding } from './tokens.js';

// ---------------------------------------------------------------------------------------------------------
// Records

export interface HeaderRecord {
  sessionId: string;
  modelType: string;
  schemaVersion: number;
  state: string;
  createTime: Date;
  updateTime: Date;
  expireTime: Date | undefined;
  endUserId: string | undefined;
  forkedFromSessionId: string | undefined;
  forkedFromRevision: number | undefined;
  tokenEncoding: TokenizerEncoding;
  revision: number;
  revisionCount: number;
  /** Checked (labels.ts), null-prototype; not versioned, so the current ones. */
  labels: Record<string, string>;
}

export interface RevisionRecord {
  revision: number;
  schemaVersion: number;
  state: string;
  actor: Actor | '';
  actorInput: string;
  fields: Record<string, unknown>;
  dialogueLength: number;
  updateTime: Date;
  updateMask: string[];
}

export interface ElementRecord {
  index: number;
  actor: Actor;
  actorText: string;
  timestamp: Date;
  event: string;
  revision: number;
  tokenCount: number;
  utteranceId: string;
}

export interface SecondaryRecord {
  key: string;
  value: Buffer;
  revision: number;
  createTime: Date;
}

export interface TrailerRecord {
  revisionCount: number;
  elementCount: number;
  secondaryCount: number;
}

export type SessionRecord =
  | { kind: 'header'; header: HeaderRecord }
  | { kind: 'revision'; revision: RevisionRecord }
  | { kind: 'element'; element: ElementRecord }
  | { kind: 'secondary'; secondary: SecondaryRecord }
  | { kind: 'trailer'; trailer: TrailerRecord };

/** Bounds of one import: what it holds in memory until it is written. */
export const IMPORT_LIMITS = {
  /** UTF-8 text, fields as JSON and secondary values, summed over the records. */
  bytes: 64 * 1024 * 1024,
  revisions: 100_000,
  elements: 100_000,
  secondaries: 1_000,
};

/** The paths a revision's update_mask may name (UpdateSession's, and `fields` for a fields_patch). */
const MASK_PATHS = new Set(['actor', 'actor_input', 'expire_time', 'fields']);

// ---------------------------------------------------------------------------------------------------------
// Storage

/** A revision as stored, its omitted parts put back (see SessionStore.sessionAt). */
export type StoredRevision = Omit<RevisionRecord, 'updateMask'>;

/** What a revision's log entry says that its snapshot does not: UpdateSession's mask, StreamUtterance's ids. */
export interface LogNotes {
  updateMasks: Map<number, string[]>;
  /** Utterance ids by element index. */
  utteranceIds: Map<number, string>;
}

/** A session whole, as an import writes it. */
export interface ImportedSession {
  head: StoredSession;
  revisions: Array<StoredRevision & { dialogueTokenCount: number }>;
  dialogue: DialogueRow[];
  secondary: Array<SecondaryMeta & { value: Buffer }>;
  /** Each revision's events, in the order they are logged. */
  log: Array<{ revision: number; events: SessionEvent[] }>;
}

/** What export and import need from storage beyond SessionStore. */
export interface TransferStore {
  /** Up to `limit` revisions in (after, upTo], ascending, whole. */
  revisions(sessionId: string, after: number, upTo: number, limit: number): Promise<StoredRevision[]>;
  /** The notes of the logged revisions in (after, upTo]. */
  logNotes(sessionId: string, after: number, upTo: number): Promise<LogNotes>;
  /** Up to `limit` secondary values' metadata after `after` and of revisions up to `upToRevision`, by (revision, key). */
  secondaryMetas(sessionId: string, after: { revision: number; key: string }, upToRevision: number, limit: number): Promise<SecondaryMeta[]>;
  /** Whether any session, live or a tombstone, of any account has this id. */
  idTaken(sessionId: string, tx: Tx): Promise<boolean>;
  /** Writes an imported session in `tx`; ConstraintViolation('unique') when its id is taken meanwhile. */
  insertImported(s: ImportedSession, tx: Tx): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------
// Use cases

export interface TransferDeps {
  types: ModelTypeStore;
  sessions: SessionStore;
  transfer: TransferStore;
  unitOfWork: UnitOfWork;
}

/** An import's answer. */
export interface ImportResult {
  session: StoredSession;
  revisionCount: number;
  elementCount: number;
  secondaryCount: number;
}

const REVISION_PAGE = 100;
const ELEMENT_PAGE = 100;
const SECONDARY_PAGE = 100;
/** Text of the elements of one page read for an export. */
const ELEMENT_PAGE_BYTES = 4 * 1024 * 1024;

const importResultCodec = zodCodec(
  z.object({ session: storedSessionSchema, revisionCount: z.number(), elementCount: z.number(), secondaryCount: z.number() }),
);

export class SessionTransfer {
  constructor(private readonly deps: TransferDeps) {}

  /**
   * The records of a session: every revision when `allRevisions`, else the current one. Pulled one at a
   * time, so the caller's pace (its client's) is the read's; each page read is bounded.
   */
  async *exportSession(caller: Principal, id: string, allRevisions: boolean): AsyncGenerator<SessionRecord> {
    const { sessions, transfer } = this.deps;
    const head = await sessions.readSession(caller.accountId, id);
    if (!head) throw notFound`session ${id}`;
    const last = head.revision;
    const first = allRevisions ? 1 : last;
    const revisionCount = last - first + 1;
    yield {
      kind: 'header',
      header: {
        sessionId: head.id,
        modelType: head.modelType,
        schemaVersion: head.schemaVersion,
        state: head.state,
        createTime: head.createdAt,
        updateTime: head.updatedAt,
        expireTime: head.expireTime,
        endUserId: head.endUserId,
        forkedFromSessionId: head.forkedFromSessionId,
        forkedFromRevision: head.forkedFromRevision,
        tokenEncoding: head.tokenEncoding,
        revision: last,
        revisionCount,
        labels: head.labels,
      },
    };
    // A page that comes back short means rows went: the session was deleted (or the export is wrong).
    const gone = async (what: string): Promise<AppError> => {
      if (!(await sessions.sessionExists(caller.accountId, id))) return notFound`session ${id}`;
      return new AppError('INTERNAL', `session ${id}: ${what} missing from the export`);
    };
    let sentElements = 0;
    let sentSecondary = 0;
    let doneRevision = 0;
    let after = first - 1;
    while (after < last) {
      const page = await transfer.revisions(id, after, last, REVISION_PAGE);
      if (page.length === 0 || page[0]!.revision !== after + 1) throw await gone(`revision ${after + 1}`);
      const pageEnd = page[page.length - 1]!.revision;
      // The log's notes only matter when the log is rebuilt revision by revision.
      const notes = allRevisions ? await transfer.logNotes(id, after, pageEnd) : { updateMasks: new Map<number, string[]>(), utteranceIds: new Map<number, string>() };
      for (const [i, r] of page.entries()) {
        if (r.revision !== after + 1 + i) throw await gone(`revision ${after + 1 + i}`);
        yield { kind: 'revision', revision: { ...r, updateMask: notes.updateMasks.get(r.revision) ?? [] } };
        while (sentElements < r.dialogueLength) {
          const rows = await sessions.dialoguePage(id, sentElements, r.dialogueLength, ELEMENT_PAGE, ELEMENT_PAGE_BYTES);
          if (rows.length === 0 || rows[0]!.seq !== sentElements + 1) throw await gone(`dialogue element ${sentElements + 1}`);
          for (const d of rows) {
            if (d.seq !== sentElements + 1) throw await gone(`dialogue element ${sentElements + 1}`);
            sentElements++;
            yield {
              kind: 'element',
              element: { index: d.seq, actor: d.actor, actorText: d.actorText, timestamp: d.timestamp, event: d.event, revision: d.revision, tokenCount: d.tokenCount, utteranceId: notes.utteranceIds.get(d.seq) ?? '' },
            };
          }
        }
        // Keys are never empty: (r, '') is before every value of revision r.
        let cursor = { revision: doneRevision + 1, key: '' };
        for (;;) {
          const metas = await transfer.secondaryMetas(id, cursor, r.revision, SECONDARY_PAGE);
          for (const m of metas) {
            // One value (up to 3 MiB) in memory at a time.
            const v = await sessions.secondary(id, m.key);
            if (!v) throw await gone(`secondary value ${quote(m.key)}`);
            sentSecondary++;
            yield { kind: 'secondary', secondary: { key: m.key, value: v.value, revision: m.revision, createTime: m.createdAt } };
          }
          const end = metas[metas.length - 1];
          if (!end || metas.length < SECONDARY_PAGE) break;
          cursor = { revision: end.revision, key: end.key };
        }
        doneRevision = r.revision;
      }
      after = pageEnd;
    }
    // Everything was read while the session was live: were it deleted now, the export would still be of it
    // as it was. Deleted before the last read, some read above came back short, or this says so.
    if (!(await sessions.sessionExists(caller.accountId, id))) throw notFound`session ${id}`;
    yield { kind: 'trailer', trailer: { revisionCount, elementCount: sentElements, secondaryCount: sentSecondary } };
  }

  /**
   * Recreates a session from `records` (each with the path that names it in errors, e.g. `records[3]`),
   * all or nothing; see the module's comment. `fingerprint` identifies the records for a retry with
   * `requestId`.
   */
  async importSession(
    caller: Principal,
    records: AsyncIterable<{ record: SessionRecord; path: string }>,
    options: { keepSessionId: boolean; requestId: string | undefined; fingerprint: () => string },
  ): Promise<ImportResult & { replayed: boolean }> {
    const plan = new ImportPlan((name) => this.deps.types.modelTypeVersions(caller.accountId, name));
    for await (const { record, path } of records) await plan.add(record, path);
    const checked = plan.finish();
    const id = options.keepSessionId ? checked.header.sessionId : randomUUID();
    const imported = await built(checked, id, caller.accountId);
    const key = genieRequestKey(caller, 'ImportSession', options.requestId, { keepSessionId: options.keepSessionId, records: options.requestId ? options.fingerprint() : '' });
    try {
      const { value, replayed } = await this.deps.unitOfWork.run(
        key,
        importResultCodec,
        async (tx) => {
          if (options.keepSessionId && (await this.deps.transfer.idTaken(id, tx))) throw sessionExists(id);
          await this.deps.transfer.insertImported(imported, tx);
          return { session: imported.head, revisionCount: imported.revisions.length, elementCount: imported.dialogue.length, secondaryCount: imported.secondary.length };
        },
        (v) => v.session.id,
      );
      return { ...value, session: presented(value.session, checked.versions), replayed };
    } catch (err) {
      if (isConstraintViolation(err, 'unique')) throw sessionExists(id);
      throw err;
    }
  }
}

/** ALREADY_EXISTS SESSION_ALREADY_EXISTS: ids are never reused, a deleted session's (its tombstone's) included. */
const sessionExists = (id: string): AppError => alreadyExists`session ${id}`;

/** The session as reads present it: at its type's latest version. */
function presented(s: StoredSession, versions: readonly ModelTypeRow[]): StoredSession {
  try {
    return { ...s, ...upgrade(s, versions, s.modelType) };
  } catch {
    return s;
  }
}

/** A fingerprint of records as they stream by: a running hash, never the records themselves. */
export class RecordsDigest {
  private readonly hash = createHash('sha256');

  add(bytes: Uint8Array): void {
    this.hash.update(bytes);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checking an import

interface Checked {
  header: HeaderRecord;
  revisions: RevisionRecord[];
  elements: ElementRecord[];
  secondary: SecondaryRecord[];
  /** Elements and values by the revision record they followed. */
  addedBy: Array<{ elements: number; secondary: number }>;
  versions: ModelTypeRow[];
}

const bytesOfFields = (f: Record<string, unknown>) => Buffer.byteLength(JSON.stringify(f));

/**
 * An import's records, checked one by one as they arrive: the order of an export, consistent counts, the
 * model type's versions and states, the bounds of IMPORT_LIMITS. Field-level checks (sizes, ids, enums) are
 * the transport's, before a record gets here.
 */
class ImportPlan {
  private header: HeaderRecord | undefined;
  private readonly revisions: RevisionRecord[] = [];
  private readonly elements: ElementRecord[] = [];
  private readonly secondary: SecondaryRecord[] = [];
  private readonly addedBy: Array<{ elements: number; secondary: number }> = [];
  private readonly keys = new Set<string>();
  private trailer: TrailerRecord | undefined;
  private bytes = 0;
  private versions: ModelTypeRow[] | undefined;

  constructor(private readonly versionsOf: (modelType: string) => Promise<ModelTypeRow[]>) {}

  async add(r: SessionRecord, path: string): Promise<void> {
    if (this.trailer) throw invalidArgument(path, 'follows the trailer, which ends an export');
    if (!this.header) {
      if (r.kind !== 'header') throw invalidArgument(`${path}.header`, 'is required: an import starts with the header');
      this.header = r.header;
      return;
    }
    switch (r.kind) {
      case 'header':
        throw invalidArgument(`${path}.header`, 'must be the first record only');
      case 'revision':
        return this.addRevision(r.revision, `${path}.revision`);
      case 'element':
        return this.addElement(r.element, `${path}.element`);
      case 'secondary':
        return this.addSecondary(r.secondary, `${path}.secondary`);
      case 'trailer':
        return this.addTrailer(r.trailer, `${path}.trailer`);
    }
  }

  finish(): Checked {
    const header = this.header;
    if (!header) throw invalidArgument('records[0].header', 'is required: the stream ended before any record');
    if (!this.trailer || !this.versions) throw invalidArgument(`records[${this.count()}].trailer`, 'is required: the stream ended without a trailer, so the export is not whole');
    return { header, revisions: this.revisions, elements: this.elements, secondary: this.secondary, addedBy: this.addedBy, versions: this.versions };
  }

  private count(): number {
    return 1 + this.revisions.length + this.elements.length + this.secondary.length + (this.trailer ? 1 : 0);
  }

  private charge(bytes: number): void {
    this.bytes += bytes;
    if (this.bytes > IMPORT_LIMITS.bytes) throw tooBig(`more than ${IMPORT_LIMITS.bytes} bytes of text, fields and values`);
  }

  private async addRevision(r: RevisionRecord, path: string): Promise<void> {
    const header = this.header!;
    const prev = this.revisions[this.revisions.length - 1];
    this.closeRevision(path);
    if (this.revisions.length >= IMPORT_LIMITS.revisions) throw tooBig(`more than ${IMPORT_LIMITS.revisions} revisions`);
    if (prev) {
      if (r.revision !== prev.revision + 1) throw invalidArgument(`${path}.revision`, `must be ${prev.revision + 1}, one more than the revision before`);
    } else if (r.revision !== 1 && r.revision !== header.revision) {
      throw invalidArgument(`${path}.revision`, `must be 1 (an export of every revision) or the header's revision ${header.revision} (an export of the current one)`);
    }
    if (r.revision > header.revision) throw invalidArgument(`${path}.revision`, `is past the header's revision ${header.revision}`);
    if (r.dialogueLength < (prev?.dialogueLength ?? 0)) throw invalidArgument(`${path}.dialogue_length`, 'must not be less than the revision before (a dialogue only grows)');
    for (const p of r.updateMask) if (!MASK_PATHS.has(p)) throw invalidArgument(`${path}.update_mask`, `path ${quote(p)} is not one of ${[...MASK_PATHS].join(', ')}`);
    this.versions ??= await this.versionsOf(header.modelType);
    const version = this.versions.find((v) => v.schemaVersion === r.schemaVersion);
    if (!version) {
      throw failedPrecondition(
        `model type ${quote(header.modelType)} is not registered at schema version ${r.schemaVersion} in this account (${path}.schema_version); register it, then import again`,
        'MODEL_TYPE_NOT_REGISTERED',
        [{ type: 'MODEL_TYPE', subject: `model_type/${header.modelType.slice(0, 100)}/schema_version/${r.schemaVersion}`, description: 'the importing account has not registered this version' }],
        new Map([
          ['model_type', header.modelType.slice(0, 100)],
          ['schema_version', String(r.schemaVersion)],
        ]),
      );
    }
    if (!version.stateMachine.states.includes(r.state)) {
      throw invalidArgument(`${path}.state`, `${quote(r.state)} is not a state of model type ${quote(header.modelType)} version ${r.schemaVersion}`);
    }
    const violations = fieldViolations(version.jsonSchema, r.fields);
    if (violations.length) throw invalidArgument(violations.map((v) => ({ field: `${path}.fields${v.field.replace(/^fields/, '')}`, description: v.description })));
    this.charge(Buffer.byteLength(r.actorInput) + bytesOfFields(r.fields));
    this.revisions.push(r);
    this.addedBy.push({ elements: 0, secondary: 0 });
  }

  /** The revision before the record at `path` must have got every element its dialogue_length counts. */
  private closeRevision(path: string): void {
    const cur = this.revisions[this.revisions.length - 1];
    if (cur && this.elements.length !== cur.dialogueLength) {
      throw invalidArgument(path, `comes after ${this.elements.length} dialogue elements, but revision ${cur.revision} has a dialogue_length of ${cur.dialogueLength}`);
    }
  }

  /** The revision record the next element or value belongs to, and the rule for its revision. */
  private current(path: string, revision: number): RevisionRecord {
    const cur = this.revisions[this.revisions.length - 1];
    if (!cur) throw invalidArgument(path, 'must follow a revision record');
    const everyRevision = this.revisions[0]!.revision === 1;
    // In an export of every revision each one brings what it added; the first exported brings all before it.
    const ok = everyRevision && this.revisions.length > 1 ? revision === cur.revision : revision >= 1 && revision <= cur.revision;
    if (!ok) throw invalidArgument(`${path}.revision`, `must be ${everyRevision && this.revisions.length > 1 ? cur.revision : `1–${cur.revision}`}: the revision record it follows`);
    return cur;
  }

  private addElement(e: ElementRecord, path: string): void {
    const cur = this.current(path, e.revision);
    if (this.addedBy[this.addedBy.length - 1]!.secondary > 0) throw invalidArgument(path, "must come before the revision's secondary values");
    if (e.index !== this.elements.length + 1) throw invalidArgument(`${path}.index`, `must be ${this.elements.length + 1}, the next position in the dialogue`);
    if (e.index > cur.dialogueLength) throw invalidArgument(`${path}.index`, `is past revision ${cur.revision}'s dialogue_length of ${cur.dialogueLength}`);
    const prev = this.elements[this.elements.length - 1];
    if (prev && e.revision < prev.revision) throw invalidArgument(`${path}.revision`, 'must not be less than the element before');
    if (this.elements.length >= IMPORT_LIMITS.elements) throw tooBig(`more than ${IMPORT_LIMITS.elements} dialogue elements`);
    this.charge(Buffer.byteLength(e.actorText));
    this.elements.push(e);
    this.addedBy[this.addedBy.length - 1]!.elements++;
  }

  private addSecondary(s: SecondaryRecord, path: string): void {
    this.current(path, s.revision);
    if (this.keys.has(s.key)) throw invalidArgument(`${path}.key`, 'is a key already imported (values are write-once)');
    if (this.secondary.length >= IMPORT_LIMITS.secondaries) throw tooBig(`more than ${IMPORT_LIMITS.secondaries} secondary values`);
    this.charge(s.value.length);
    this.keys.add(s.key);
    this.secondary.push(s);
    this.addedBy[this.addedBy.length - 1]!.secondary++;
  }

  private addTrailer(t: TrailerRecord, path: string): void {
    const header = this.header!;
    const last = this.revisions[this.revisions.length - 1];
    if (!last) throw invalidArgument(path, 'comes before any revision record');
    this.closeRevision(path);
    const mismatch = (field: string, want: number | string) => invalidArgument(`${path}.${field}`, `must be ${want}, what the records before it hold`);
    if (t.revisionCount !== this.revisions.length) throw mismatch('revision_count', this.revisions.length);
    if (t.elementCount !== this.elements.length) throw mismatch('element_count', this.elements.length);
    if (t.secondaryCount !== this.secondary.length) throw mismatch('secondary_count', this.secondary.length);
    // The header announced what the revisions then told: both must agree.
    const h = 'records[0].header';
    if (header.revisionCount !== this.revisions.length) throw invalidArgument(`${h}.revision_count`, `is ${header.revisionCount}, but ${this.revisions.length} revision records followed`);
    if (header.revision !== last.revision) throw invalidArgument(`${h}.revision`, `is ${header.revision}, but the last revision record is ${last.revision}`);
    if (header.schemaVersion !== last.schemaVersion) throw invalidArgument(`${h}.schema_version`, `must be the last revision's, ${last.schemaVersion}`);
    if (header.state !== last.state) throw invalidArgument(`${h}.state`, `must be the last revision's, ${quote(last.state)}`);
    if (header.updateTime.getTime() !== last.updateTime.getTime()) throw invalidArgument(`${h}.update_time`, "must be the last revision's update_time");
    this.trailer = t;
  }
}

function tooBig(what: string): AppError {
  return resourceExhausted('IMPORT_SIZE_LIMIT', `the import holds ${what}; a session this large cannot be imported`, new Map([['max_bytes', String(IMPORT_LIMITS.bytes)]]));
}

// ---------------------------------------------------------------------------------------------------------
// Building the rows

/** The rows of a checked import under `id` in `accountId`: counts, compact revisions, the rebuilt log. */
async function built(c: Checked, id: string, accountId: string): Promise<ImportedSession> {
  const { header } = c;
  const encoding = header.tokenEncoding ?? DEFAULT_ENCODING;
  const dialogue: DialogueRow[] = [];
  const running: number[] = [0];
  for (const e of c.elements) {
    const tokenCount = await countTokens(e.actorText, encoding);
    dialogue.push({ seq: e.index, actor: e.actor, actorText: e.actorText, event: e.event, timestamp: e.timestamp, revision: e.revision, tokenCount });
    running.push(running[running.length - 1]! + tokenCount);
  }
  const revisions = c.revisions.map((r) => ({ ...r, dialogueTokenCount: running[r.dialogueLength]! }));
  const last = revisions[revisions.length - 1]!;
  const head: StoredSession = {
    id,
    accountId,
    modelType: header.modelType,
    schemaVersion: last.schemaVersion,
    state: last.state,
    actor: last.actor,
    actorInput: last.actorInput,
    fields: last.fields,
    revision: last.revision,
    dialogueLength: last.dialogueLength,
    dialogueTokenCount: last.dialogueTokenCount,
    tokenEncoding: encoding,
    forkedFromSessionId: header.forkedFromSessionId,
    forkedFromRevision: header.forkedFromRevision,
    expireTime: header.expireTime,
    endUserId: header.endUserId,
    labels: header.labels,
    createdAt: header.createTime,
    updatedAt: last.updateTime,
  };
  const secondary = c.secondary.map((s) => ({ key: s.key, value: s.value, sizeBytes: s.value.length, revision: s.revision, createdAt: s.createTime }));
  return { head, revisions, dialogue, secondary, log: logOf(c) };
}

/**
 * The event log of an import, revision by revision, as the write RPCs log them: the first revision is the
 * creation (session_created; a fork's names its source); a later one that stored secondary values logged
 * secondary_put; one that appended elements logged, per element, state_changed (when it carries an event)
 * and dialogue_appended; any other was an UpdateSession (fields_updated with the exported mask, or with the
 * paths that changed when the export has none). An import of the current revision only logs its creation at
 * that revision.
 */
function logOf(c: Checked): Array<{ revision: number; events: SessionEvent[] }> {
  const out: Array<{ revision: number; events: SessionEvent[] }> = [];
  let element = 0;
  let value = 0;
  c.revisions.forEach((r, i) => {
    const added = c.addedBy[i]!;
    const elements = c.elements.slice(element, element + added.elements);
    const values = c.secondary.slice(value, value + added.secondary);
    element += added.elements;
    value += added.secondary;
    const prev = c.revisions[i - 1];
    let events: SessionEvent[];
    if (!prev) {
      const h = c.header;
      const forkedFrom = h.forkedFromSessionId ? { sessionId: h.forkedFromSessionId, revision: h.forkedFromRevision ?? 0 } : undefined;
      events = [sessionCreated({ modelType: h.modelType, schemaVersion: r.schemaVersion, state: r.state, fields: r.fields, forkedFrom })];
    } else if (values.length) {
      events = values.map((s) => secondaryPut(s.key, s.value.length));
    } else if (elements.length) {
      events = elements.flatMap((e) => {
        const appended = dialogueAppended(e.index, { actor: e.actor, actorText: e.actorText, event: e.event, timestamp: e.timestamp }, e.utteranceId || undefined);
        if (!e.event) return [appended];
        return [stateChanged({ fromState: prev.state, toState: r.state, event: e.event, actor: e.actor, actorInput: r.actorInput }), appended];
      });
    } else {
      const changed = [
        ...(r.actor !== prev.actor ? ['actor'] : []),
        ...(r.actorInput !== prev.actorInput ? ['actor_input'] : []),
        ...(fingerprintOf(r.fields) !== fingerprintOf(prev.fields) ? ['fields'] : []),
      ];
      const updateMask = r.updateMask.length ? r.updateMask : changed.length ? changed : ['expire_time'];
      events = [fieldsUpdated({ updateMask, fields: r.fields, actor: r.actor, actorInput: r.actorInput })];
    }
    out.push({ revision: r.revision, events });
  });
  return out;
}
