import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Principal } from '../principal.js';
import { AppError, alreadyExists, clip, failedPrecondition, fieldTooLarge, invalidArgument, notFound, quote, revisionMismatch as mismatch } from '../errors.js';
import { ownValue, setOwn } from '../keys.js';
import { fingerprintOf } from '../fingerprint.js';
import { isoDate, zodCodec } from '../json-codec.js';
import { UNRECORDED, unrecorded, type Codec, type RequestKey, type Tx, type UnitOfWork } from '../ports/unit-of-work.js';
import type { Bus } from '../ports/bus.js';
import { afterCommit } from '../after-commit.js';
import { LocalCache } from '../local-cache.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { cursorInt, cursorOf, cursorString, decodePageToken, encodePageToken, isTimestampText, type Page } from '../paging.js';
import { labelEntries, noLabels, sameLabels, type Labels } from '../labels.js';
import { millisecondBounds, type Order, type Restriction } from '../filter.js';
import { HOT_ELEMENTS, type GenieCache } from './cache.js';
import { ModelTypeUseCases, type ModelTypeCacheOptions } from './model-types.js';
import { genieRequestKey, MAX_READ_BYTES, withinBudget } from './rules.js';
import { ACTORS, FRAMES, formatDialogue, formatEntry, joinEntries, type Actor, type DialogueFormatName } from './dialogue-format.js';
import { DEFAULT_ENCODING, countTokens, encodingOrDefault, tokenCounter, type TokenCounter, type TokenizerEncoding } from './tokens.js';
import { dialogueAppended, fieldsUpdated, secondaryPut, sessionCreated, sessionDeleted, stateChanged, type SessionCommit } from './events.js';
import { fieldViolations } from './json-schema.js';
import { findTransition, storedStatesFor, upgrade, type ModelTypeDef, type ModelTypeRow } from './model-type.js';
import { storedSessionSchema, type DialogueRow, type RemovedContent, type ModelTypeStore, type SessionCursor, type SessionFilter, type SessionOrder, type SessionStore, type SessionWrite, type StateFilter, type StoredSession, type WriteResult } from './store.js';

export const DEFAULT_CACHE_TTL_SECONDS = 3600;
/**
 * Limits of what a caller may store, chosen so that every read stays well under the 4 MiB a gRPC client
 * receives by default: a secondary value, an utterance, the developer's fields.
 */
export const MAX_SECONDARY_BYTES = 3 * 1024 * 1024;
export const MAX_TEXT_BYTES = 1024 * 1024;
export const MAX_FIELDS_BYTES = 256 * 1024;
/** How many sessions' heads a process keeps as guesses for its next writes, and how big each may be. */
const LOCAL_HEADS = 1000;
const LOCAL_HEAD_MAX_CHARS = 16 * 1024;
/** A generous allowance per dialogue element for its non-text parts on the wire. */
const ELEMENT_OVERHEAD_BYTES = 64;

/** A session as clients see it: upgraded to its type's latest schema version. */
export interface SessionView {
  session: StoredSession;
  /** Undefined in list and write results. */
  dialogue: DialogueRow[] | undefined;
  currentResponse: DialogueRow | undefined;
  /** GetSession: how many of the oldest elements were left out of `dialogue` to bound the reply. */
  omittedDialogue?: number;
  /** Set on the result of a write whose request id repeated an earlier one: nothing was written. */
  replayed?: true;
}

/** What erasing one end user's sessions deleted. */
export interface EndUserSessionsErased {
  sessions: number;
  dialogue: number;
  revisions: number;
  secondary: number;
  requestIds: number;
}

/** What a write appended to the dialogue, without the text (write answers never repeat it). */
export interface ElementMeta {
  index: number;
  actor: Actor;
  event: string;
  timestamp: Date;
  textBytes: number;
}

/** The session's own fields UpdateSession may set (update_mask paths). */
export type SessionPath = 'actor' | 'actor_input' | 'expire_time' | 'labels';

/** ABORTED REVISION_MISMATCH with the current revision as ErrorInfo metadata. */
export function revisionMismatch(id: string, current: number, expected: number): AppError {
  return mismatch(current, `session ${id} is at revision ${current}, not the expected ${expected}; nothing was written`);
}

const seqCursor = cursorOf(cursorInt(0));
// A time order's cursor: the last session's seq and its time as Postgres wrote it (checked as a timestamp).
const timeCursor = cursorOf(z.object({ seq: cursorInt(0), at: cursorString(64).refine(isTimestampText) }).strict());
const keyCursor = cursorOf(cursorString(256));


/** What the use cases stand on: the stores, the hot copy, the unit of work and (for model types) the bus. */
export interface GenieUseCasesDeps {
  types: ModelTypeStore;
  sessions: SessionStore;
  cache: GenieCache;
  unitOfWork: UnitOfWork;
  bus?: Bus | undefined;
  /** Where contained cache and bus failures and model type cache reads are reported; nothing by default. */
  telemetry?: Telemetry;
}

/** GenieModel sessions: state-machine events, dialogue, secondary storage, revisions; model types through `modelTypes`. */
export class GenieUseCases {
  /** RegisterModelType, GetModelType, ListModelTypes, and the type versions every session read needs. */
  readonly modelTypes: ModelTypeUseCases;
  private readonly types: ModelTypeStore;
  private readonly sessions: SessionStore;
  private readonly cache: GenieCache;
  private readonly unitOfWork: UnitOfWork;
  private readonly bus: Bus | undefined;
  private readonly telemetry: Telemetry;
  /**
   * What this process last committed of each session: the first guess of a one-statement write (see
   * writeFast), which the statement's revision guard checks, so a stale guess costs a retry, never a wrong write.
   */
  private readonly heads = new LocalCache<StoredSession>({ maxEntries: LOCAL_HEADS, ttlMs: 60_000 });

  constructor(deps: GenieUseCasesDeps, opts: ModelTypeCacheOptions = {}) {
    ({ types: this.types, sessions: this.sessions, cache: this.cache, unitOfWork: this.unitOfWork, bus: this.bus } = deps);
    this.telemetry = deps.telemetry ?? noTelemetry;
    this.modelTypes = new ModelTypeUseCases(deps, opts);
  }

  /** Subscribes to model type registrations made by other processes; call once before serving. */
  start(): Promise<void> {
    return this.modelTypes.start();
  }

  stop(): Promise<void> {
    return this.modelTypes.stop();
  }

  // ---------------------------------------------------------------------------------------------------
  // Sessions

  async createSession(
    caller: Principal,
    modelType: string,
    fields: Record<string, unknown>,
    expireTime?: Date,
    requestId?: string,
    endUserId?: string,
    labels: Labels = noLabels(),
  ): Promise<SessionView> {
    let versions: ModelTypeRow[] = [];
    // The end user and labels join the fingerprint only when set, so a retry of a request made before they
    // existed still matches its first answer.
    const request = {
      modelType,
      fields,
      expireTime,
      ...(endUserId ? { endUserId } : {}),
      ...(Object.keys(labels).length ? { labels: labelEntries(labels) } : {}),
    };
    const { value: r, replayed } = await this.unitOfWork.run(
      this.key(caller, 'CreateSession', requestId, request),
      writeCodec,
      async (tx) => {
        versions = await this.types.modelTypeVersions(caller.accountId, modelType, tx);
        const latest = versions[versions.length - 1];
        if (!latest) throw notFound`model type ${modelType}`;
        const violations = fieldViolations(latest.jsonSchema, fields);
        if (violations.length) throw invalidArgument(violations);
        const state = latest.stateMachine.initialState;
        // The session counts in this encoding for as long as it lives (registration validated the name).
        const tokenEncoding = encodingOrDefault(latest.tokenizerEncoding ?? '') ?? DEFAULT_ENCODING;
        const s = { id: randomUUID(), accountId: caller.accountId, modelType, schemaVersion: latest.schemaVersion, state, actor: '' as const, actorInput: '', fields, tokenEncoding };
        const created = sessionCreated({ modelType, schemaVersion: latest.schemaVersion, state, fields });
        return this.sessions.insertSession({ ...s, forkedFromSessionId: undefined, forkedFromRevision: undefined, expireTime, endUserId, labels }, undefined, [created], tx);
      },
      (v) => v.session.id,
    );
    if (replayed) return writeView(r);
    await this.afterCommit(r, this.advanceStep(0, r.session, [], versions));
    return present(r.session, undefined, versions, r.last);
  }

  /**
   * The current session (hot copy first), or the one at `revision` when set, with its newest `pageSize`
   * dialogue elements (undefined: all), fewer when the reply would exceed MAX_READ_BYTES (`omittedDialogue`
   * counts the rest).
   */
  async getSession(caller: Principal, id: string, revision: number | undefined, pageSize?: number): Promise<SessionView> {
    const newest = pageSize ?? Infinity;
    const read = revision ? await this.readAt(caller, id, revision) : await this.readCurrent(caller, id, newest);
    const { session, versions } = read;
    const dialogue = read.dialogue.length > newest ? read.dialogue.slice(read.dialogue.length - newest) : read.dialogue;
    const view = present(session, dialogue, versions);
    const last = view.currentResponse;
    let budget =
      MAX_READ_BYTES -
      Buffer.byteLength(JSON.stringify(view.session.fields)) -
      Buffer.byteLength(view.session.actorInput) -
      (last ? Buffer.byteLength(last.actorText) + ELEMENT_OVERHEAD_BYTES : 0) -
      4096;
    let keep = 0;
    for (let i = dialogue.length - 1; i >= 0; i--) {
      budget -= Buffer.byteLength((dialogue[i] as DialogueRow).actorText) + ELEMENT_OVERHEAD_BYTES;
      if (budget < 0) break;
      keep++;
    }
    return { ...view, dialogue: dialogue.slice(dialogue.length - keep), omittedDialogue: session.dialogueLength - keep };
  }

  /** A page of the dialogue (at `revision` when set), oldest first, bounded by `pageSize` and MAX_READ_BYTES. */
  async listDialogue(
    caller: Principal,
    id: string,
    revision: number | undefined,
    pageSize: number,
    pageToken: string | undefined,
  ): Promise<Page<DialogueRow> & { firstIndex: number }> {
    const filters = { sessionId: id, revision: revision ?? 0 };
    const after = decodePageToken(pageToken, 'dialogue', filters, seqCursor) ?? 0;
    const length = await this.sessions.dialogueLengthAt(caller.accountId, id, revision);
    if (length === undefined) throw await this.missing(caller, id, revision);
    const items = await this.sessions.dialoguePage(id, after, length, pageSize, MAX_READ_BYTES - pageSize * ELEMENT_OVERHEAD_BYTES);
    const last = items[items.length - 1];
    return {
      items,
      firstIndex: items[0]?.seq ?? 0,
      nextPageToken: last && last.seq < length ? encodePageToken('dialogue', filters, last.seq) : '',
    };
  }

  /**
   * Sets the session's own fields named by `paths` and merges `fieldsPatch` (RFC 7396) into the developer's
   * fields. An update that changes nothing commits nothing: `changed` is false and the revision stays.
   */
  async updateSession(
    caller: Principal,
    id: string,
    update: {
      paths: SessionPath[];
      values: { actor: Actor | ''; actorInput: string; expireTime: Date | undefined; labels?: Labels | undefined };
      fieldsPatch: Record<string, unknown> | undefined;
    },
    expectedRevision: number | undefined,
    requestId?: string,
  ): Promise<{ view: SessionView; changed: boolean }> {
    const { paths, values, fieldsPatch } = update;
    // Labels join the fingerprint as entries sorted by key (any wire order is one request), and only when named.
    const request = { id, update: { ...update, values: { ...values, labels: values.labels && labelEntries(values.labels) } }, expectedRevision };
    const { view, unchanged } = await this.write(
      caller,
      id,
      expectedRevision,
      { rpc: 'UpdateSession', requestId, request, fast: true },
      async (cur, latest) => {
        let { actor, actorInput, expireTime, labels } = cur;
        for (const p of paths) {
          if (p === 'actor') actor = values.actor;
          else if (p === 'expire_time') expireTime = values.expireTime;
          else if (p === 'labels') labels = values.labels ?? noLabels();
          else actorInput = values.actorInput;
        }
        const fields = fieldsPatch ? mergePatch(cur.fields, fieldsPatch) as Record<string, unknown> : cur.fields;
        if (
          actor === cur.actor &&
          actorInput === cur.actorInput &&
          expireTime?.getTime() === cur.expireTime?.getTime() &&
          sameLabels(labels, cur.labels) &&
          fingerprintOf(fields) === fingerprintOf(cur.fields)
        ) {
          return undefined;
        }
        const size = Buffer.byteLength(JSON.stringify(fields));
        if (size > MAX_FIELDS_BYTES) throw fieldTooLarge('fields_patch', `the patched fields would be ${size} bytes as JSON; at most ${MAX_FIELDS_BYTES} are allowed`);
        const violations = fieldViolations(latest.jsonSchema, fields);
        if (violations.length) throw invalidArgument(violations);
        const mask = [...paths, ...(fieldsPatch ? ['fields'] : [])];
        return {
          ...cur,
          fields,
          actor,
          actorInput,
          expireTime,
          labels,
          dialogue: [],
          events: [fieldsUpdated({ updateMask: mask, fields, actor, actorInput })],
        };
      },
    );
    return { view, changed: !unchanged };
  }

  /**
   * Deletes every copy of the session's content (see SessionStore.tombstone); watchers get session_deleted.
   * The hot copy goes first and must go: were the store unreachable, a deletion reported as done could
   * leave the content readable until the copy's TTL, so the call fails instead, having deleted nothing.
   */
  async deleteSession(caller: Principal, id: string, expectedRevision: number | undefined, requestId?: string): Promise<void> {
    this.heads.delete(id);
    await this.cache.tombstoneBeforeDelete(id);
    // No upgrade here: a session whose data cannot be upgraded must still be deletable.
    const { value: commit, replayed } = await this.unitOfWork.run(this.key(caller, 'DeleteSession', requestId, { id, expectedRevision }), voidCodec, async (tx) => {
      const cur = await this.lockForWrite(caller, id, expectedRevision, tx);
      return this.sessions.tombstone(cur, [sessionDeleted()], new Date(), tx);
    });
    // Again after the commit: a read that raced the deletion may have refilled the copy before it.
    if (!replayed && commit) await this.afterCommit({ session: { id }, commit }, () => this.cache.tombstone(id));
  }

  /**
   * A page of live sessions passing the typed filters and `query` (ANDed), in `order` (undefined: creation
   * sequence), with the count of all that match when `withTotal`.
   */
  async listSessions(
    caller: Principal,
    filter: { modelType: string | undefined; state: string | undefined; endUserId?: string | undefined },
    pageSize: number,
    pageToken: string | undefined,
    query: { restrictions?: Restriction[]; order?: Order | undefined; withTotal?: boolean } = {},
  ): Promise<Page<SessionView> & { totalSize: number }> {
    const restrictions = query.restrictions ?? [];
    const order: SessionOrder = query.order ? { by: query.order.field === 'create_time' ? 'created' : 'updated', desc: query.order.desc } : { by: 'seq', desc: false };
    // The page token binds every filter and the order; the end user, filter and order only when set, so
    // tokens issued before they existed stay valid.
    const filters = {
      modelType: filter.modelType ?? '',
      state: filter.state ?? '',
      ...(filter.endUserId ? { endUserId: filter.endUserId } : {}),
      ...(restrictions.length ? { filter: restrictions } : {}),
      ...(query.order ? { orderBy: query.order } : {}),
    };
    const after: SessionCursor | undefined =
      order.by === 'seq'
        ? (() => {
            const seq = decodePageToken(pageToken, 'sessions', filters, seqCursor);
            return seq === undefined ? undefined : { seq };
          })()
        : decodePageToken(pageToken, 'sessions', filters, timeCursor);
    const empty = { items: [], nextPageToken: '', totalSize: 0 };
    // Equalities of the filter narrow the typed fields; two different values of one field match nothing.
    const pick = (field: 'model_type' | 'state' | 'end_user_id', typed: string | undefined): { value: string | undefined; none: boolean } => {
      const values = new Set([...(typed ? [typed] : []), ...restrictions.flatMap((r) => (r.kind === 'equals' && r.field === field ? [r.value] : []))]);
      return { value: [...values][0], none: values.size > 1 };
    };
    const modelType = pick('model_type', filter.modelType);
    const state = pick('state', filter.state);
    const endUser = pick('end_user_id', filter.endUserId);
    const labels = new Map<string, string>();
    let conflicting = false;
    for (const r of restrictions) {
      if (r.kind !== 'label') continue;
      if (labels.has(r.key) && labels.get(r.key) !== r.value) conflicting = true;
      labels.set(r.key, r.value);
    }
    if (modelType.none || state.none || endUser.none || conflicting) return empty;
    const types = modelType.value
      ? await this.types.modelTypeVersions(caller.accountId, modelType.value)
      : await this.types.allModelTypes(caller.accountId);
    const byType = groupByName(types);
    const wanted = state.value;
    // Stored sessions may predate a state rename: match every stored state that upgrades to the one asked for.
    const states: StateFilter | undefined =
      wanted === undefined ? undefined : [...byType].flatMap(([name, versions]) => storedStatesFor(wanted, versions).map((s) => ({ modelType: name, ...s })));
    const stored: SessionFilter = {
      modelType: modelType.value,
      states,
      endUserId: endUser.value,
      labels: [...labels].map(([key, value]) => ({ key, value })),
      hasLabels: restrictions.flatMap((r) => (r.kind === 'has_label' ? [r.key] : [])),
      // Times compare at the millisecond the API shows (see millisecondBounds).
      times: restrictions.flatMap((r) => (r.kind === 'time' ? millisecondBounds(r).map((b) => ({ column: r.field === 'create_time' ? ('created' as const) : ('updated' as const), ...b })) : [])),
    };
    const rows = await this.sessions.listSessions(caller.accountId, stored, order, after, pageSize + 1);
    const totalSize = query.withTotal ? await this.sessions.countSessions(caller.accountId, stored) : 0;
    // A page also stops before MAX_READ_BYTES: each session may carry 256 KiB of fields and two 1 MiB texts.
    const page = withinBudget(
      rows.slice(0, pageSize),
      (r) => Buffer.byteLength(JSON.stringify(r.session.fields)) + Buffer.byteLength(r.session.actorInput) + Buffer.byteLength(r.last?.actorText ?? '') + 512,
    );
    const items = page.map((r) => {
      const versions = byType.get(r.session.modelType) ?? [];
      let view: SessionView;
      try {
        view = present(r.session, undefined, versions);
      } catch (err) {
        // One session a newer server wrote must not make the whole list unreadable: it is listed as
        // stored, and its schema_version tells the client why; GetSession reports the error.
        if (!(err instanceof AppError) || err.code !== 'FAILED_PRECONDITION') throw err;
        view = { session: r.session, dialogue: undefined, currentResponse: undefined };
      }
      return { ...view, currentResponse: r.last };
    });
    const last = page[page.length - 1];
    const cursor = last && (order.by === 'seq' ? last.seq : { seq: last.seq, at: last.at });
    return { items, nextPageToken: rows.length > page.length && cursor !== undefined ? encodePageToken('sessions', filters, cursor) : '', totalSize };
  }

  async forkSession(caller: Principal, id: string, revision: number | undefined, requestId?: string): Promise<SessionView> {
    const key = this.key(caller, 'ForkSession', requestId, { id, revision });
    let versions: ModelTypeRow[] = [];
    const { value: r, replayed } = await this.unitOfWork.run(
      key,
      writeCodec,
      async (tx) => {
        // The source is read in the claim's transaction: a retry replays before reading.
        const src = revision ? await this.readAt(caller, id, revision, tx) : await this.readLocked(caller, id, tx);
        versions = src.versions;
        // Only the versioned part: upgrade() may return the stored session itself.
        const { schemaVersion, state, fields } = upgrade(src.session, src.versions, src.session.modelType);
        const up = { schemaVersion, state, fields };
        const forkedFrom = { sessionId: id, revision: src.session.revision };
        const { actor, actorInput, modelType, tokenEncoding } = src.session;
        const s = { id: randomUUID(), accountId: caller.accountId, modelType, ...up, actor, actorInput, tokenEncoding, forkedFromSessionId: id, forkedFromRevision: src.session.revision };
        const created = sessionCreated({ modelType, ...up, forkedFrom });
        // A copy of the content must not outlive the original's retention, nor escape its end user's erasure.
        const fork = { ...forkedFrom, dialogueLength: src.session.dialogueLength, dialogueTokenCount: src.session.dialogueTokenCount };
        return this.sessions.insertSession({ ...s, expireTime: src.session.expireTime, endUserId: src.session.endUserId, labels: src.session.labels }, fork, [created], tx);
      },
      (v) => v.session.id,
    );
    if (replayed) return writeView(r);
    await this.afterCommit(r, this.advanceStep(0, r.session, [], versions));
    return present(r.session, undefined, versions, r.last);
  }

  /**
   * Deletes every session of one end user of the caller's account exactly as DeleteSession does (hot copies
   * tombstoned first, every copy of the content and the stored answers repeating it deleted, watchers
   * told), `batchSize` sessions per short transaction. Forks carry their source's end user, so they go
   * too. Sessions created meanwhile are erased if they commit before the last batch is read.
   */
  async eraseEndUser(caller: Principal, endUserId: string, batchSize: number): Promise<EndUserSessionsErased> {
    const report: EndUserSessionsErased = { sessions: 0, dialogue: 0, revisions: 0, secondary: 0, requestIds: 0 };
    for (;;) {
      const ids = await this.sessions.endUserSessions(caller.accountId, endUserId, batchSize);
      for (const id of ids) this.heads.delete(id);
      // The batch's copies at once (one round trip's wait, not one per session). UNAVAILABLE when the
      // hot-copy store is unreachable: the batches before this one stay erased, this one is not started.
      await Promise.all(ids.map((id) => this.cache.tombstoneBeforeDelete(id)));
      const batch = await this.inTransaction(async (tx) => {
        const out: Array<{ session: { id: string }; commit: SessionCommit; removed: RemovedContent }> = [];
        for (const id of ids) {
          const cur = await this.sessions.lockSession(caller.accountId, id, 'update', tx);
          // Deleted meanwhile (DeleteSession, the purge): nothing left to erase.
          if (cur?.endUserId !== endUserId) continue;
          const { removed, ...commit } = await this.sessions.tombstone(cur, [sessionDeleted()], new Date(), tx);
          out.push({ session: { id }, commit, removed });
        }
        return out;
      });
      for (const d of batch) {
        report.sessions++;
        report.dialogue += d.removed.dialogue;
        report.revisions += d.removed.revisions;
        report.secondary += d.removed.secondary;
        report.requestIds += d.removed.requestIds;
      }
      // Again after the commit (a read that raced the deletion may have refilled a copy before it), then
      // the watchers; each session's steps in order, the sessions side by side.
      await Promise.all(batch.map((d) => this.afterCommit(d, () => this.cache.tombstone(d.session.id))));
      if (ids.length < batchSize) return report;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Retention

  /**
   * Deletes, batch by batch, every session past its retention at `now` exactly as DeleteSession does
   * (hot copies evicted, watchers told), then drops tombstones of sessions deleted before `tombstoneCutoff`.
   */
  async purgeExpired(opts: { now: Date; tombstoneCutoff: Date; batchSize: number }): Promise<{ sessions: number; tombstones: number; batches: number }> {
    const report = { sessions: 0, tombstones: 0, batches: 0 };
    for (;;) {
      const batch = await this.inTransaction(async (tx) => {
        const doomed = await this.sessions.lockExpired(opts.now, opts.batchSize, tx);
        const out: Array<{ session: { id: string }; commit: SessionCommit }> = [];
        for (const d of doomed) out.push({ session: { id: d.id }, commit: await this.sessions.tombstone(d, [sessionDeleted()], opts.now, tx) });
        return out;
      });
      if (batch.length) report.batches++;
      for (const d of batch) {
        this.heads.delete(d.session.id);
        await this.afterCommit(d, () => this.cache.tombstone(d.session.id));
      }
      report.sessions += batch.length;
      if (batch.length < opts.batchSize) break;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
    for (;;) {
      const n = await this.sessions.dropTombstones(opts.tombstoneCutoff, opts.batchSize);
      if (n) report.batches++;
      report.tombstones += n;
      if (n < opts.batchSize) break;
      await new Promise((r) => setImmediate(r));
    }
    return report;
  }

  // ---------------------------------------------------------------------------------------------------
  // Events and dialogue

  /**
   * Fires an event. Stream code reads the committed revision as `view.session.revision`; `view` carries no
   * dialogue, and its current_response is the appended element only on a first (not replayed) answer.
   */
  async sendEvent(
    caller: Principal,
    req: {
      sessionId: string;
      event: string;
      actor: Actor | undefined;
      actorInput: string;
      expectedRevision?: number | undefined;
      requestId?: string | undefined;
      /** A request key of another RPC (StreamUtterance, Chat) that carries this write; overrides requestId. */
      once?: RequestKey | undefined;
      /** The StreamUtterance this write commits (its deltas' id), recorded on the dialogue_appended event. */
      utteranceId?: string | undefined;
    },
  ): Promise<{ view: SessionView; previousState: string; element: ElementMeta }> {
    const { requestId, once, utteranceId, ...request } = req;
    let previousState = '';
    const { view, element, replayed } = await this.write(
      caller,
      req.sessionId,
      req.expectedRevision,
      { rpc: 'SendEvent', requestId, request, key: once, previousState: () => previousState, fast: true },
      async (cur, latest) => {
        const t = findTransition(latest.stateMachine, cur.state, req.event);
        if (!t) {
          throw failedPrecondition(
            `event ${quote(req.event)} is not allowed in state ${quote(cur.state)} of model type ${clip(latest.name, 64)} version ${latest.schemaVersion}`,
            'TRANSITION_NOT_ALLOWED',
            [
              {
                type: 'TRANSITION',
                subject: `state/${clip(cur.state, 64)}/event/${clip(req.event, 64)}`,
                description: 'no transition of the state machine leaves this state on this event',
              },
            ],
            new Map([
              ['state', cur.state],
              ['event', req.event],
            ]),
          );
        }
        if (t.actor && req.actor && req.actor !== t.actor) {
          throw invalidArgument('actor', `event ${JSON.stringify(req.event)} from ${JSON.stringify(t.fromState)} is spoken by ${actorEnumName(t.actor)}, not ${actorEnumName(req.actor)}`);
        }
        const actor = t.actor || req.actor;
        if (!actor) {
          throw invalidArgument(
            'actor',
            `event ${JSON.stringify(req.event)} from ${JSON.stringify(t.fromState)} names no actor: send one of ACTOR_USER, ACTOR_ASSISTANT, ACTOR_SYSTEM`,
          );
        }
        previousState = cur.state;
        const element = { actor, actorText: req.actorInput, event: req.event, timestamp: new Date() };
        return {
          ...cur,
          state: t.toState,
          actor,
          actorInput: req.actorInput,
          dialogue: [element],
          events: [
            stateChanged({ fromState: t.fromState, toState: t.toState, event: req.event, actor, actorInput: req.actorInput }),
            dialogueAppended(cur.dialogueLength + 1, element, utteranceId),
          ],
        };
      },
    );
    return { view, previousState: replayed ? (replayed.previousState ?? '') : previousState, element: element as ElementMeta };
  }

  /** Appends an utterance; `view` as for sendEvent (stream code reads `session.revision`). */
  async appendDialogue(
    caller: Principal,
    req: {
      sessionId: string;
      actor: Actor;
      actorText: string;
      expectedRevision?: number | undefined;
      requestId?: string | undefined;
      once?: RequestKey | undefined;
      /** As sendEvent's. */
      utteranceId?: string | undefined;
    },
  ): Promise<SessionView & { element: ElementMeta }> {
    const { requestId, once, utteranceId, ...request } = req;
    const { view, element } = await this.write(caller, req.sessionId, req.expectedRevision, { rpc: 'AppendDialogue', requestId, request, key: once, fast: true }, async (cur) => {
      const element = { actor: req.actor, actorText: req.actorText, event: '', timestamp: new Date() };
      return {
        ...cur,
        // The spec's `actor`/`actor_input` are whoever spoke last, with or without a transition.
        actor: req.actor,
        actorInput: req.actorText,
        dialogue: [element],
        events: [dialogueAppended(cur.dialogueLength + 1, element, utteranceId)],
      };
    });
    return { ...view, element: element as ElementMeta };
  }

  /**
   * The dialogue rendered in `format` (at `revision` when set), its tokens counted in `encoding` (the
   * session's own when unset). Without a token budget, the whole dialogue. With one, every system element
   * and the largest number k of the most recent other elements for which the whole rendering counts at most
   * `tokenBudget` tokens, in dialogue order (an empty selection is "", 0 tokens); FAILED_PRECONDITION
   * TOKEN_BUDGET_TOO_SMALL when the system elements alone do not fit. `tokenCount` is always the
   * encoding's count of `text` itself.
   *
   * With a budget only the elements that can fit are read: the stored counts (when `encoding` is the
   * session's) choose how many of the newest to read, without their text, so the cost follows the budget,
   * not the dialogue's length; another encoding reads and counts the newest elements batch by batch.
   */
  async renderWithin(
    caller: Principal,
    id: string,
    opts: { format: DialogueFormatName; tokenBudget?: number | undefined; encoding?: TokenizerEncoding | undefined; revision?: number | undefined },
  ): Promise<Rendering> {
    const { format, tokenBudget, revision } = opts;
    if (tokenBudget === undefined) {
      const { session, dialogue } = revision ? await this.readAt(caller, id, revision) : await this.readCurrent(caller, id, Infinity);
      const encoding = opts.encoding ?? session.tokenEncoding;
      const text = checkedSize(
        id,
        format,
        formatDialogue(
          dialogue.map((d) => ({ actor: d.actor, actorText: d.actorText, timestamp: d.timestamp })),
          format,
        ),
      );
      const count = await tokenCounter(encoding);
      return { text, tokenCount: count(text), elementCount: dialogue.length, omittedCount: 0, revision: session.revision, encoding };
    }
    const head = await this.sessions.dialogueHead(caller.accountId, id, revision);
    if (!head) throw await this.missing(caller, id, revision);
    const encoding = opts.encoding ?? head.tokenEncoding;
    const count = await tokenCounter(encoding);
    const chosen = await new BudgetRender(this.sessions, id, head.dialogueLength, format, count, encoding === head.tokenEncoding).within(tokenBudget);
    const text = checkedSize(id, format, chosen.text);
    return { text, tokenCount: chosen.tokenCount, elementCount: chosen.elementCount, omittedCount: head.dialogueLength - chosen.elementCount, revision: head.revision, encoding };
  }

  // ---------------------------------------------------------------------------------------------------
  // Secondary storage

  async putSecondary(
    caller: Principal,
    req: { sessionId: string; key: string; value: Buffer; expectedRevision?: number | undefined; requestId?: string | undefined },
  ): Promise<{ revision: number; createdAt: Date }> {
    // The fingerprint hashes the value instead of walking up to 3 MiB of bytes as JSON.
    const request = { sessionId: req.sessionId, key: req.key, value: createHash('sha256').update(req.value).digest('hex'), expectedRevision: req.expectedRevision };
    const { view } = await this.write(caller, req.sessionId, req.expectedRevision, { rpc: 'PutSecondary', requestId: req.requestId, request }, async (cur, _latest, tx) => {
      if (await this.sessions.secondaryExists(req.sessionId, req.key, tx)) {
        throw alreadyExists`secondary storage key ${JSON.stringify(req.key)} of session ${req.sessionId} (values are write-once)`;
      }
      return {
        ...cur,
        dialogue: [],
        secondary: { key: req.key, value: req.value },
        events: [secondaryPut(req.key, req.value.length)],
      };
    });
    return { revision: view.session.revision, createdAt: view.session.updatedAt };
  }

  async getSecondary(caller: Principal, sessionId: string, key: string) {
    if (!(await this.sessions.sessionExists(caller.accountId, sessionId))) throw notFound`session ${sessionId}`;
    const found = await this.sessions.secondary(sessionId, key);
    if (!found) throw notFound`secondary storage key ${JSON.stringify(key)} of session ${sessionId}`;
    return found;
  }

  async listSecondaryKeys(caller: Principal, sessionId: string, pageSize: number, pageToken: string | undefined) {
    if (!(await this.sessions.sessionExists(caller.accountId, sessionId))) throw notFound`session ${sessionId}`;
    const filters = { sessionId };
    const after = decodePageToken(pageToken, 'secondary_keys', filters, keyCursor);
    const rows = await this.sessions.listSecondary(sessionId, after, pageSize + 1);
    const items = rows.slice(0, pageSize);
    const last = items[items.length - 1];
    return { items, nextPageToken: rows.length > pageSize && last ? encodePageToken('secondary_keys', filters, last.key) : '' };
  }

  // ---------------------------------------------------------------------------------------------------

  /**
   * The common write: claim the request id, lock, check the expected revision, upgrade the stored data to
   * the latest version (so the write stores it at that version), let `apply` decide (undefined: nothing
   * changes, nothing is committed), commit one revision, evict, publish. A replayed request id returns the
   * first answer's session (no dialogue, no current_response), element and previous state, and does nothing else.
   */
  private async write(
    caller: Principal,
    id: string,
    expectedRevision: number | undefined,
    idem: { rpc: string; requestId: string | undefined; request: unknown; key?: RequestKey | undefined; previousState?: () => string; fast?: boolean },
    apply: Apply,
  ): Promise<{ view: SessionView; element: ElementMeta | undefined; unchanged: boolean; replayed: { previousState?: string | undefined } | undefined }> {
    const fast = idem.fast && !idem.key && !idem.requestId ? await this.writeFast(caller, id, expectedRevision, apply) : undefined;
    if (fast) {
      const { result, versions, stored, appended } = fast;
      this.rememberHead(result.session);
      await this.afterCommit(result, this.advanceStep(stored.revision, result.session, appended, versions));
      const last = appended[appended.length - 1];
      return { view: present(result.session, undefined, versions, result.last), element: last && elementMeta(last), unchanged: false, replayed: undefined };
    }
    let versions: ModelTypeRow[] = [];
    let committed: { result: WriteResult; stored: StoredSession; appended: DialogueRow[] } | undefined;
    let unchanged: { stored: StoredSession; last: DialogueRow | undefined } | undefined;
    const { value, replayed } = await this.unitOfWork.run(
      idem.key ?? this.key(caller, idem.rpc, idem.requestId, idem.request),
      writeAnswerCodec,
      async (tx) => {
        const stored = await this.lockForWrite(caller, id, expectedRevision, tx);
        versions = await this.types.modelTypeVersions(caller.accountId, stored.modelType, tx);
        const up = upgrade(stored, versions, stored.modelType);
        const latest = versions[versions.length - 1];
        // upgrade() has refused a type without versions; this only tells the compiler.
        if (!latest) throw failedPrecondition(`model type ${stored.modelType} is not registered`, 'MODEL_TYPE_NOT_REGISTERED');
        const w = await counted(await apply({ ...stored, ...up }, latest, tx), stored.tokenEncoding);
        if (!w) {
          unchanged = { stored, last: await this.lastElement(stored, tx) };
          const session = present(stored, undefined, versions).session;
          return { session, element: undefined, unchanged: true, extra: { previousState: idem.previousState?.() } };
        }
        const write = { ...w, schemaVersion: up.schemaVersion };
        const result = await this.sessions.commitRevision(stored, write, tx);
        const appended = appendedRows(stored, write, result.session.revision);
        committed = { result, stored, appended };
        const last = appended[appended.length - 1];
        const session = present(result.session, undefined, versions).session;
        return { session, element: last && elementMeta(last), unchanged: false, extra: { previousState: idem.previousState?.() } };
      },
      (v) => v.session.id,
    );
    if (replayed) {
      return {
        view: { session: value.session, dialogue: undefined, currentResponse: undefined, replayed: true },
        element: value.element,
        unchanged: value.unchanged,
        replayed: value.extra,
      };
    }
    if (!committed) {
      const { stored, last } = unchanged!;
      return { view: present(stored, undefined, versions, last), element: undefined, unchanged: true, replayed: undefined };
    }
    const { result, stored, appended } = committed;
    this.rememberHead(result.session);
    await this.afterCommit(result, this.advanceStep(stored.revision, result.session, appended, versions));
    return { view: present(result.session, undefined, versions, result.last), element: value.element, unchanged: false, replayed: undefined };
  }

  /**
   * A write without a request id in one statement and no transaction: the session as the hot copy (else
   * Postgres) has it, the decision made on that, and a commit that lands only if the session is still at
   * that revision and no newer version of its type was registered since the versions were cached.
   * Undefined when it did not commit, for whatever reason before the statement was sent: the locked path
   * then decides afresh, so every refusal a client sees is decided on the locked, current session.
   */
  private async writeFast(
    caller: Principal,
    id: string,
    expectedRevision: number | undefined,
    apply: Apply,
  ): Promise<{ result: WriteResult; versions: ModelTypeRow[]; stored: StoredSession; appended: DialogueRow[] } | undefined> {
    // First what this process last saw of the session (no round trip), then the hot copy or Postgres.
    const guesses = [
      async () => this.heads.get(id),
      async () => (await this.cache.get(id, 0)).copy?.session ?? this.sessions.readSession(caller.accountId, id),
    ];
    for (const guess of guesses) {
      let stored: StoredSession | undefined;
      let write: SessionWrite | undefined;
      let versions: ModelTypeRow[];
      try {
        stored = await guess();
        if (stored?.accountId !== caller.accountId || (expectedRevision && expectedRevision !== stored.revision)) continue;
        versions = await this.modelTypes.versionsFor(caller.accountId, stored.modelType, stored.schemaVersion);
        const latest = versions[versions.length - 1];
        if (!latest) continue;
        const up = upgrade(stored, versions, stored.modelType);
        const w = await counted(await apply({ ...stored, ...up }, latest, undefined), stored.tokenEncoding);
        if (!w) continue;
        write = { ...w, schemaVersion: up.schemaVersion };
      } catch {
        continue;
      }
      // From here an error is the write's own: the statement may have committed, so it is never retried.
      const result = await this.sessions.commitIfAt(stored, write, { latestSchemaVersion: versions[versions.length - 1]?.schemaVersion ?? 0 });
      if (result) return { result, versions, stored, appended: appendedRows(stored, write, result.session.revision) };
    }
    return undefined;
  }

  /** Keeps `session` as this process's guess of the session's head for its next write, if it is small. */
  private rememberHead(session: StoredSession): void {
    if (session.actorInput.length > LOCAL_HEAD_MAX_CHARS || JSON.stringify(session.fields).length > LOCAL_HEAD_MAX_CHARS) {
      this.heads.delete(session.id);
      return;
    }
    this.heads.set(session.id, session, this.heads.token());
  }

  /** The live session locked for a write, at `expectedRevision` when that is set. */
  private async lockForWrite(caller: Principal, id: string, expectedRevision: number | undefined, tx: Tx): Promise<StoredSession> {
    const cur = await this.sessions.lockSession(caller.accountId, id, 'update', tx);
    if (!cur) throw notFound`session ${id}`;
    checkRevision(cur, expectedRevision);
    return cur;
  }

  private async lastElement(s: StoredSession, tx: Tx): Promise<DialogueRow | undefined> {
    return s.dialogueLength ? this.sessions.element(s.id, s.dialogueLength, tx) : undefined;
  }

  private key(caller: Principal, rpc: string, requestId: string | undefined, request: unknown) {
    return genieRequestKey(caller, rpc, requestId, request);
  }

  /** A transaction that records nothing (reads under a lock, the purge's batches). */
  private async inTransaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return (await this.unitOfWork.run(UNRECORDED, unrecorded<T>(), work)).value;
  }

  /**
   * The cache and bus work after a committed write, under the one rule of after-commit.ts: it never fails
   * the call. The copy moves (or goes) before the message announcing the change, so a watcher that reads on
   * the message reads the new revision.
   */
  private async afterCommit(r: { session: { id: string }; commit: SessionCommit }, cacheStep: () => Promise<void>): Promise<void> {
    await afterCommit(this.telemetry, cacheStep, () => this.cache.publish(r.session.id, r.commit));
  }

  /** The write-through of a commit that moved `session` from revision `after`, appending `appended`. */
  private advanceStep(after: number, session: StoredSession, appended: readonly DialogueRow[], versions: readonly ModelTypeRow[]): () => Promise<void> {
    return () => this.cache.advance(after, session, appended, cacheTtlMs(versions));
  }

  /** NOT_FOUND for a session, or for its revision when the session exists. */
  private async missing(caller: Principal, id: string, revision: number | undefined, tx?: Tx): Promise<AppError> {
    if (revision !== undefined && (await this.sessions.sessionExists(caller.accountId, id, tx))) return notFound`revision ${revision} of session ${id}`;
    return notFound`session ${id}`;
  }

  /**
   * The current session and its `newest` dialogue elements (Infinity: all): the hot copy, else Postgres
   * (filling the copy). Older elements than the copy holds come from Postgres: the dialogue is append-only,
   * so the copy's length says which.
   */
  private async readCurrent(caller: Principal, id: string, newest: number) {
    const { copy: hot, token } = await this.cache.get(id, newest);
    if (hot && hot.session.accountId === caller.accountId) {
      const versions = await this.modelTypes.versionsFor(caller.accountId, hot.session.modelType, hot.session.schemaVersion);
      const { session } = hot;
      const dialogue = hot.complete ? hot.dialogue : await this.dialogueOf(session, newest);
      return { session, dialogue, versions };
    }
    // The fill happens under the read's share lock: a writer cannot commit in between, so the copy cannot
    // be older than that writer's write-through.
    return this.inTransaction(async (tx) => {
      const found = await this.readLocked(caller, id, tx, Math.max(newest, HOT_ELEMENTS));
      await this.cache.put(found.session, found.dialogue, token, cacheTtlMs(found.versions));
      const dialogue = found.dialogue.length > newest ? found.dialogue.slice(found.dialogue.length - newest) : found.dialogue;
      return { ...found, dialogue };
    });
  }

  /** The newest `newest` elements of the session's dialogue (Infinity: all), from Postgres. */
  private dialogueOf(session: StoredSession, newest: number, tx?: Tx): Promise<DialogueRow[]> {
    return Number.isFinite(newest) ? this.sessions.dialogueTail(session.id, session.dialogueLength, newest, tx) : this.sessions.dialogue(session.id, session.dialogueLength, tx);
  }

  /** The current session, share-locked in `tx`, with its newest `newest` elements and its type's versions, from Postgres. */
  private async readLocked(caller: Principal, id: string, tx: Tx, newest = Infinity) {
    const session = await this.sessions.lockSession(caller.accountId, id, 'share', tx);
    if (!session) throw notFound`session ${id}`;
    const dialogue = await this.dialogueOf(session, newest, tx);
    return { session, dialogue, versions: await this.types.modelTypeVersions(caller.accountId, session.modelType, tx) };
  }

  private async readAt(caller: Principal, id: string, revision: number, tx?: Tx) {
    const found = await this.sessions.sessionAt(caller.accountId, id, revision, tx);
    if (!found) throw await this.missing(caller, id, revision, tx);
    const versions = tx
      ? await this.types.modelTypeVersions(caller.accountId, found.session.modelType, tx)
      : await this.modelTypes.versionsFor(caller.accountId, found.session.modelType, found.session.schemaVersion);
    return { ...found, versions };
  }
}

/** A write as `apply` decides it: the elements it appends are counted after. */
type Decided = Omit<SessionWrite, 'schemaVersion' | 'dialogue'> &
  Partial<Pick<SessionWrite, 'schemaVersion'>> & { dialogue: Array<Omit<SessionWrite['dialogue'][number], 'tokenCount'>> };

/** A rendering of a dialogue and what it holds (see GenieUseCases.renderWithin). */
export interface Rendering {
  text: string;
  /** The encoding's count of `text`. */
  tokenCount: number;
  /** How many elements `text` renders. */
  elementCount: number;
  /** How many elements of the dialogue at `revision` it leaves out. */
  omittedCount: number;
  /** The revision rendered. */
  revision: number;
  encoding: TokenizerEncoding;
}

/** FAILED_PRECONDITION DIALOGUE_TOO_LARGE for a rendering over MAX_READ_BYTES; else the text. */
function checkedSize(id: string, format: DialogueFormatName, text: string): string {
  const size = Buffer.byteLength(text);
  if (size > MAX_READ_BYTES) {
    throw failedPrecondition(
      `the ${format} rendering of session ${id} is ${size} bytes; at most ${MAX_READ_BYTES} are sent: page the dialogue with ListDialogue or set a token_budget`,
      'DIALOGUE_TOO_LARGE',
      [{ type: 'SIZE', subject: `session/${id}`, description: `the rendering exceeds ${MAX_READ_BYTES} bytes` }],
      new Map([['max_bytes', String(MAX_READ_BYTES)]]),
    );
  }
  return text;
}

/**
 * One rendering within a token budget (see GenieUseCases.renderWithin for the rule). Candidates are the
 * non-system elements, newest first, read in batches; the count of each one's rendered entry estimates
 * the whole (tokens are not additive across joins, so the estimate only seeds the search), and exact
 * counts of whole renderings decide: k fits and k + 1 does not.
 */
class BudgetRender {
  private system: DialogueRow[] = [];
  /** Non-system elements read so far, newest first, with their entry's token count. */
  private readonly candidates: Array<{ row: DialogueRow; entry: string; tokens: number }> = [];
  /** Everything before this position is unread. */
  private before: number;
  private batch = 16;
  private readonly exact = new Map<number, number>();

  constructor(
    private readonly sessions: SessionStore,
    private readonly id: string,
    length: number,
    private readonly format: DialogueFormatName,
    private readonly count: TokenCounter,
    /** Whether the stored counts are in this encoding. */
    private readonly stored: boolean,
  ) {
    this.before = length + 1;
  }

  async within(budget: number): Promise<{ text: string; tokenCount: number; elementCount: number }> {
    this.system = await this.sessions.systemElements(this.id, this.before - 1);
    const systemTokens = this.tokensOf(0);
    if (systemTokens > budget) {
      throw failedPrecondition(
        `the system elements of session ${this.id} alone count ${systemTokens} tokens, more than the token_budget of ${budget}`,
        'TOKEN_BUDGET_TOO_SMALL',
        [{ type: 'TOKEN_BUDGET', subject: `session/${this.id}`, description: 'the system elements, always rendered, do not fit the budget' }],
        new Map([['system_token_count', String(systemTokens)]]),
      );
    }
    const f = FRAMES[this.format];
    const frame = this.count(f.open) + this.count(f.close);
    const separator = this.count(f.separator);
    const systemEntries = this.system.reduce((n, d) => n + this.count(formatEntry(d, this.format)), 0);
    let fits = 0;
    for (;;) {
      // Read until the candidates' entries (at least 1 token each) surely overflow what is left.
      await this.read(budget - systemTokens);
      // The estimate of k elements: frame, entries and the separators between them.
      let estimate = 0;
      let tokens = frame + systemEntries + separator * Math.max(0, this.system.length - 1);
      for (const [i, c] of this.candidates.entries()) {
        tokens += c.tokens + (this.system.length + i > 0 ? separator : 0);
        if (tokens > budget) break;
        estimate = i + 1;
      }
      fits = this.largestFitting(Math.max(fits, estimate), budget);
      if (fits < this.candidates.length || this.before <= 1) break;
    }
    const text = this.render(fits);
    return { text, tokenCount: this.tokensOf(fits), elementCount: this.system.length + fits };
  }

  /** Reads older candidates until their lower bound exceeds `room` tokens, or the dialogue is exhausted; at least one batch. */
  private async read(room: number): Promise<void> {
    let lower = this.candidates.reduce((n, c) => n + c.tokens, 0);
    let first = true;
    while (this.before > 1 && (first || lower <= room)) {
      first = false;
      const counts = await this.sessions.tokenCountsBefore(this.id, this.before, this.batch);
      // Counts alone are small; rows read for their text (another encoding) may be up to 1 MiB each.
      this.batch = Math.min(this.batch * 4, this.stored ? 1024 : 64);
      if (counts.length === 0) {
        this.before = 1;
        break;
      }
      let take = counts.length;
      if (this.stored) {
        // A rendered entry is its text and markup: about as many tokens as the text, never fewer than 1.
        let guess = lower;
        for (const [i, c] of counts.entries()) {
          if (c.actor !== 'system') guess += Math.max(1, c.tokenCount - 2);
          if (guess > room) {
            take = i + 1;
            break;
          }
        }
      }
      const from = counts[take - 1]!.seq;
      const rows = await this.sessions.dialogueRange(this.id, from, this.before - 1);
      for (let i = rows.length - 1; i >= 0; i--) {
        const row = rows[i]!;
        if (row.actor === 'system') continue;
        const entry = formatEntry(row, this.format);
        const tokens = this.count(entry);
        this.candidates.push({ row, entry, tokens });
        lower += tokens;
      }
      this.before = from;
    }
  }

  /** The largest k ≤ candidates for which the rendering fits, searched from `guess` (k = 0 fits). */
  private largestFitting(guess: number, budget: number): number {
    const max = this.candidates.length;
    const fits = (k: number) => this.tokensOf(k) <= budget;
    let lo = 0;
    let hi = max + 1;
    const start = Math.min(guess, max);
    if (fits(start)) {
      lo = start;
      // Gallop up from the estimate: usually one step says k + 1 does not fit.
      for (let step = 1; lo + step <= max; step *= 2) {
        if (!fits(lo + step)) {
          hi = lo + step;
          break;
        }
        lo += step;
      }
    } else {
      hi = start;
      for (let step = 1; hi - step > 0; step *= 2) {
        if (fits(hi - step)) {
          lo = hi - step;
          break;
        }
        hi -= step;
      }
    }
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (fits(mid)) lo = mid;
      else hi = mid;
    }
    return lo;
  }

  /** The system elements and the newest k candidates, in dialogue order. */
  private render(k: number): string {
    const kept = [...this.system.map((row) => ({ seq: row.seq, entry: formatEntry(row, this.format) })), ...this.candidates.slice(0, k).map((c) => ({ seq: c.row.seq, entry: c.entry }))];
    kept.sort((a, b) => a.seq - b.seq);
    return joinEntries(
      kept.map((x) => x.entry),
      this.format,
    );
  }

  private tokensOf(k: number): number {
    let n = this.exact.get(k);
    if (n === undefined) {
      n = this.count(this.render(k));
      this.exact.set(k, n);
    }
    return n;
  }
}

/** What a write decides from the session as it is (`tx` undefined on the one-statement path). */
type Apply = (cur: StoredSession, latest: ModelTypeRow, tx: Tx | undefined) => Promise<Decided | undefined>;

/**
 * `w` with each appended element's token count in the session's encoding: every path that appends (both
 * write paths, so every RPC that writes dialogue) counts here, before the commit that stores the counts.
 */
async function counted(w: Decided | undefined, encoding: TokenizerEncoding) {
  if (!w) return undefined;
  const dialogue = [];
  for (const d of w.dialogue) dialogue.push({ ...d, tokenCount: await countTokens(d.actorText, encoding) });
  return { ...w, dialogue };
}

/** The dialogue rows `w` appends to `stored`, as committed at `revision`. */
function appendedRows(stored: StoredSession, w: SessionWrite, revision: number): DialogueRow[] {
  return w.dialogue.map((d, i) => ({ ...d, seq: stored.dialogueLength + i + 1, revision }));
}

/** Undefined is unconditional (and so is 0, which stream code has used for that). */
function checkRevision(cur: StoredSession, expected: number | undefined): void {
  if (expected && expected !== cur.revision) throw revisionMismatch(cur.id, cur.revision, expected);
}

/** How long a hot copy of a session of this type lives. */
function cacheTtlMs(versions: readonly ModelTypeRow[]): number {
  return (versions[versions.length - 1]?.cacheTtlSeconds || DEFAULT_CACHE_TTL_SECONDS) * 1000;
}

function present(stored: StoredSession, dialogue: DialogueRow[] | undefined, versions: readonly ModelTypeDef[], last?: DialogueRow): SessionView {
  const up = upgrade(stored, versions, stored.modelType);
  const session = { ...stored, ...up };
  return { session, dialogue, currentResponse: last ?? dialogue?.[dialogue.length - 1] };
}

/** A replayed Create/Fork answer: the session as first answered, without the text of its last utterance. */
function writeView(r: WriteResult): SessionView {
  return { session: r.session, dialogue: undefined, currentResponse: undefined };
}

function elementMeta(d: DialogueRow): ElementMeta {
  return { index: d.seq, actor: d.actor, event: d.event, timestamp: d.timestamp, textBytes: Buffer.byteLength(d.actorText) };
}


/** The name a JSON client sends for an actor (its Actor enum value). */
export const actorEnumName = (a: Actor): string => `ACTOR_${a.toUpperCase()}`;

/** Create/Fork answers as stored for a replay: the session only (no utterance text). */
const writeCodec: Codec<WriteResult> = (() => {
  const stored = zodCodec(z.object({ session: storedSessionSchema }));
  return {
    encode: (r) => stored.encode({ session: r.session }),
    decode: (json) => {
      const { session } = stored.decode(json);
      return { session, last: undefined, commit: { revision: session.revision, events: [] } };
    },
  };
})();

const elementMetaSchema: z.ZodType<ElementMeta> = z.object({
  index: z.number(),
  actor: z.enum(ACTORS),
  event: z.string(),
  timestamp: isoDate,
  textBytes: z.number(),
});
const writeAnswerCodec = zodCodec(
  z.object({
    session: storedSessionSchema,
    element: elementMetaSchema.optional(),
    unchanged: z.boolean().default(false),
    // SendEvent's previous state; older answers may hold other keys here.
    extra: z.object({ previousState: z.string().optional() }).default({}),
  }),
);
const voidCodec: Codec<SessionCommit | undefined> = { encode: () => null, decode: () => undefined };

/**
 * RFC 7396 JSON Merge Patch of `target` by `patch`, on copies: null deletes, an object merges recursively
 * (into {} when the target is not an object), anything else replaces. User keys only meet objects through
 * ownValue/setOwn.
 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isObject(target) ? structuredClone(target) : {};
  for (const key of Object.keys(patch)) {
    const value = ownValue(patch, key);
    if (value === null) delete out[key];
    else setOwn(out, key, mergePatch(ownValue(out, key), value));
  }
  return out;
}

function groupByName(types: ModelTypeRow[]): Map<string, ModelTypeRow[]> {
  const m = new Map<string, ModelTypeRow[]>();
  for (const t of types) {
    const list = m.get(t.name) ?? [];
    list.push(t);
    m.set(t.name, list);
  }
  for (const list of m.values()) list.sort((a, b) => a.schemaVersion - b.schemaVersion);
  return m;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
