import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Principal } from '../auth.js';
import { AppError, alreadyExists, clip, failedPrecondition, invalidArgument, notFound, quote, revisionMismatch } from '../errors.js';
import { ownValue, setOwn } from '../keys.js';
import type { GenieCache } from '../storage/genie-cache.js';
import { afterCommit } from '../storage/after-commit.js';
import type { DialogueRow, GenieRepo, SessionWrite, StoredSession, WriteResult } from '../storage/genie-repo.js';
import { formatDialogue, type Actor, type DialogueFormatName } from './dialogue-format.js';
import { compileProblem, fieldViolations, schemaProblem } from './json-schema.js';
import { findTransition, MODEL_TYPE_NAME, modelTypeViolations, storedStatesFor, upgrade, type ModelTypeDef, type ModelTypeRow } from './model-type.js';
import { cursorInt, cursorOf, cursorString, decodePageToken, encodePageToken, PG_INTEGER_MAX, type Page } from '../paging.js';
import type { Bus } from '../storage/kv.js';
import { invalidateOnBus, LocalCache } from '../storage/local-cache.js';

export const DEFAULT_CACHE_TTL_SECONDS = 3600;
export const MAX_SECONDARY_BYTES = 16 * 1024 * 1024;

/** A session as clients see it: upgraded to its type's latest schema version. */
export interface SessionView {
  session: StoredSession;
  /** Undefined in list results. */
  dialogue: DialogueRow[] | undefined;
  currentResponse: DialogueRow | undefined;
}

/** A field-mask edit of UpdateSession, already validated by transport. */
export type UpdatePath = { kind: 'fields' } | { kind: 'field'; path: string[] } | { kind: 'actor' } | { kind: 'actor_input' } | { kind: 'expire_time' };

const seqCursor = cursorOf(cursorInt(0));
const nameVersionCursor = cursorOf(z.object({ n: z.string().regex(MODEL_TYPE_NAME), v: cursorInt(1, PG_INTEGER_MAX) }).strict());
const keyCursor = cursorOf(cursorString(256));

/** Every process drops a type's cached versions on a message here (`<account id>/<type name>`). */
export const MODEL_TYPE_REGISTERED_CHANNEL = 'genie:modeltype:registered';
/**
 * How long a process may keep a type's versions without hearing of a new one. The cache is safe because a
 * registered version never changes: the only news is a new version, and the registering process drops its
 * entry at once and tells the others on MODEL_TYPE_REGISTERED_CHANNEL (bus latency); this TTL bounds the
 * staleness when that message is lost. A session stored at a version newer than the cached latest (written
 * by a process that already knew) reloads the list, so a stale entry never makes a session unreadable.
 * Only reads use it: writes load the versions in their transaction, so they never store an older version
 * than the latest committed.
 */
export const MODEL_TYPE_CACHE_TTL_MS = 10_000;
const MODEL_TYPE_CACHE_MAX = 10_000;
const typeKey = (accountId: string, name: string) => `${accountId}/${name}`;

/** GenieModel sessions: model types, state-machine events, dialogue, secondary storage, revisions. */
export class GenieService {
  private readonly typeVersions: LocalCache<ModelTypeRow[]>;
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    private readonly repo: GenieRepo,
    private readonly cache: GenieCache,
    private readonly bus?: Bus,
    opts: { typeCacheTtlMs?: number; typeCacheMaxEntries?: number; now?: () => number } = {},
  ) {
    this.typeVersions = new LocalCache({
      ttlMs: opts.typeCacheTtlMs ?? MODEL_TYPE_CACHE_TTL_MS,
      maxEntries: opts.typeCacheMaxEntries ?? MODEL_TYPE_CACHE_MAX,
      now: opts.now,
    });
  }

  /** Subscribes to model type registrations made by other processes; call once before serving. */
  async start(): Promise<void> {
    if (this.bus && !this.unsubscribe) this.unsubscribe = await invalidateOnBus(this.bus, MODEL_TYPE_REGISTERED_CHANNEL, this.typeVersions);
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** A type's versions for a read, from the in-process cache (see MODEL_TYPE_CACHE_TTL_MS). */
  private async versionsFor(accountId: string, name: string, storedVersion: number): Promise<ModelTypeRow[]> {
    const key = typeKey(accountId, name);
    const hit = this.typeVersions.get(key);
    if (hit && (hit[hit.length - 1]?.schemaVersion ?? 0) >= storedVersion) return hit;
    const token = this.typeVersions.token();
    const versions = await this.repo.modelTypeVersions(accountId, name);
    if (versions.length) this.typeVersions.set(key, versions, token);
    return versions;
  }

  // ---------------------------------------------------------------------------------------------------
  // Model types

  async registerModelType(caller: Principal, def: ModelTypeDef): Promise<ModelTypeRow> {
    // Checks that compile nothing come first: a compiled schema costs memory until evicted, so only one
    // about to be stored (not a duplicate, not an older version) is compiled, inside the transaction.
    const schema = def.jsonSchema;
    const problem = schema && schemaProblem(schema);
    if (problem) throw invalidArgument('model_type.json_schema', problem);
    const standalone = modelTypeViolations({ ...def, upgrades: def.upgrades.map((u) => ({ ...u })) }, undefined).filter(
      (v) => !v.field.startsWith('model_type.upgrades'),
    );
    if (standalone.length) throw invalidArgument(standalone);
    const row = await this.repo.registerModelType(caller.accountId, def, (previous) => {
      if (previous && def.schemaVersion === previous.schemaVersion) throw alreadyExists`model type ${def.name} version ${def.schemaVersion}`;
      if (previous && def.schemaVersion < previous.schemaVersion) {
        throw failedPrecondition(
          `model type ${def.name} is already at version ${previous.schemaVersion}; a new version must be higher than ${previous.schemaVersion}, not ${def.schemaVersion}`,
          'SCHEMA_VERSION_NOT_HIGHER',
          [{ type: 'SCHEMA_VERSION', subject: `model_type/${clip(def.name, 64)}`, description: `must be higher than ${previous.schemaVersion}` }],
          new Map([['latest_schema_version', String(previous.schemaVersion)]]),
        );
      }
      const violations = modelTypeViolations(def, previous);
      if (violations.length) throw invalidArgument(violations);
      const unusable = schema && compileProblem(schema);
      if (unusable) throw invalidArgument('model_type.json_schema', unusable);
    });
    const key = typeKey(caller.accountId, def.name);
    this.typeVersions.delete(key);
    await this.bus?.publish(MODEL_TYPE_REGISTERED_CHANNEL, key).catch(() => {});
    return row;
  }

  async getModelType(caller: Principal, name: string, schemaVersion: number): Promise<ModelTypeRow> {
    const versions = await this.repo.modelTypeVersions(caller.accountId, name);
    const found = schemaVersion === 0 ? versions[versions.length - 1] : versions.find((v) => v.schemaVersion === schemaVersion);
    if (!found) throw schemaVersion ? notFound`model type ${name} version ${schemaVersion}` : notFound`model type ${name}`;
    return found;
  }

  async listModelTypes(caller: Principal, name: string | undefined, pageSize: number, pageToken: string | undefined): Promise<Page<ModelTypeRow>> {
    const filters = { name: name ?? '' };
    const after = decodePageToken(pageToken, 'model_types', filters, nameVersionCursor);
    const rows = await this.repo.listModelTypes(caller.accountId, name, after && { name: after.n, schemaVersion: after.v }, pageSize + 1);
    const items = rows.slice(0, pageSize);
    const last = items[items.length - 1];
    return {
      items,
      nextPageToken: rows.length > pageSize && last ? encodePageToken('model_types', filters, { n: last.name, v: last.schemaVersion }) : '',
    };
  }

  // ---------------------------------------------------------------------------------------------------
  // Sessions

  async createSession(caller: Principal, modelType: string, fields: Record<string, unknown>, expireTime?: Date): Promise<SessionView> {
    const versions = await this.repo.modelTypeVersions(caller.accountId, modelType);
    const latest = versions[versions.length - 1];
    if (!latest) throw notFound`model type ${modelType}`;
    const violations = fieldViolations(latest.jsonSchema, fields);
    if (violations.length) throw invalidArgument(violations);
    const r = await this.repo.createSession({
      id: randomUUID(),
      accountId: caller.accountId,
      modelType,
      schemaVersion: latest.schemaVersion,
      state: latest.stateMachine.initialState,
      actor: '',
      actorInput: '',
      fields,
      forkedFromSessionId: undefined,
      forkedFromRevision: undefined,
      expireTime,
    });
    await this.cache.publish(r.events);
    return present(r.session, [], versions);
  }

  /** The current session (hot copy first), or the one at `revision` when non-zero. */
  async getSession(caller: Principal, id: string, revision: number): Promise<SessionView> {
    const { session, dialogue, versions } = revision ? await this.readAt(caller, id, revision) : await this.readCurrent(caller, id);
    return present(session, dialogue, versions);
  }

  async updateSession(
    caller: Principal,
    id: string,
    paths: UpdatePath[],
    values: { fields: Record<string, unknown>; actor: Actor | ''; actorInput: string; expireTime: Date | undefined },
    expectedRevision: number,
  ): Promise<SessionView> {
    return this.write(caller, id, expectedRevision, async (cur, latest) => {
      let fields = cur.fields;
      let { actor, actorInput, expireTime } = cur;
      for (const p of paths) {
        if (p.kind === 'fields') fields = structuredClone(values.fields);
        else if (p.kind === 'field') fields = setPath(fields, p.path, values.fields);
        else if (p.kind === 'actor') actor = values.actor;
        else if (p.kind === 'expire_time') expireTime = values.expireTime;
        else actorInput = values.actorInput;
      }
      const violations = fieldViolations(latest.jsonSchema, fields);
      if (violations.length) throw invalidArgument(violations);
      const mask = paths.map((p) => (p.kind === 'field' ? `fields.${p.path.join('.')}` : p.kind));
      return {
        ...cur,
        fields,
        actor,
        actorInput,
        expireTime,
        dialogue: [],
        events: [{ kind: 'fields_updated', payload: { update_mask: mask, fields, actor, actor_input: actorInput } }],
      };
    });
  }

  /**
   * Deletes every copy of the session's content (see GenieRepo.tombstone); watchers get session_deleted.
   * The hot copy goes first and must go: were the store unreachable, a deletion reported as done could
   * leave the content readable until the copy's TTL, so the call fails instead, having deleted nothing.
   */
  async deleteSession(caller: Principal, id: string, expectedRevision: number): Promise<void> {
    await this.cache.evictOrFail(id);
    // No upgrade here: a session whose data cannot be upgraded must still be deletable.
    const r = await this.repo.writeSession(caller.accountId, id, async (cur) => {
      checkRevision(cur, expectedRevision);
      return { ...cur, dialogue: [], events: [], deleted: true };
    });
    // Again after the commit: a read that raced the deletion may have refilled the copy before it.
    await this.afterCommit(r);
  }

  async listSessions(
    caller: Principal,
    filter: { modelType: string | undefined; state: string | undefined },
    pageSize: number,
    pageToken: string | undefined,
  ): Promise<Page<SessionView>> {
    const filters = { modelType: filter.modelType ?? '', state: filter.state ?? '' };
    const after = decodePageToken(pageToken, 'sessions', filters, seqCursor) ?? 0;
    const types = filter.modelType
      ? await this.repo.modelTypeVersions(caller.accountId, filter.modelType)
      : await this.repo.allModelTypes(caller.accountId);
    const byType = groupByName(types);
    let states: Array<{ modelType: string; schemaVersion: number; states: string[] }> | undefined;
    if (filter.state !== undefined) {
      // Stored sessions may predate a state rename: match every stored state that upgrades to the one asked for.
      states = [...byType].flatMap(([name, versions]) =>
        storedStatesFor(filter.state as string, versions).map((s) => ({ modelType: name, ...s })),
      );
    }
    const rows = await this.repo.listSessions(caller.accountId, { modelType: filter.modelType, states }, after, pageSize + 1);
    const page = rows.slice(0, pageSize);
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
    return { items, nextPageToken: rows.length > pageSize && last ? encodePageToken('sessions', filters, last.seq) : '' };
  }

  async forkSession(caller: Principal, id: string, revision: number): Promise<SessionView> {
    const src = revision ? await this.readAt(caller, id, revision) : await this.readCurrent(caller, id);
    const up = upgrade(src.session, src.versions, src.session.modelType);
    const r = await this.repo.createSession(
      {
        id: randomUUID(),
        accountId: caller.accountId,
        modelType: src.session.modelType,
        schemaVersion: up.schemaVersion,
        state: up.state,
        actor: src.session.actor,
        actorInput: src.session.actorInput,
        fields: up.fields,
        forkedFromSessionId: id,
        forkedFromRevision: src.session.revision,
        // A copy of the content must not outlive the original's retention.
        expireTime: src.session.expireTime,
      },
      { sessionId: id, revision: src.session.revision, dialogueLength: src.session.dialogueLength },
    );
    await this.cache.publish(r.events);
    return present(r.session, r.dialogue, src.versions);
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
      const batch = await this.repo.purgeExpiredBatch(opts.now, opts.batchSize);
      if (batch.length) report.batches++;
      for (const d of batch) {
        await this.cache.evict(d.id);
        await this.cache.publish(d.events);
      }
      report.sessions += batch.length;
      if (batch.length < opts.batchSize) break;
      // Give queued requests the event loop (and, on PGlite, the connection) between batches.
      await new Promise((r) => setImmediate(r));
    }
    for (;;) {
      const n = await this.repo.dropTombstonesBatch(opts.tombstoneCutoff, opts.batchSize);
      if (n) report.batches++;
      report.tombstones += n;
      if (n < opts.batchSize) break;
      await new Promise((r) => setImmediate(r));
    }
    return report;
  }

  // ---------------------------------------------------------------------------------------------------
  // Events and dialogue

  async sendEvent(
    caller: Principal,
    req: { sessionId: string; event: string; actor: Actor | undefined; actorInput: string; expectedRevision: number },
  ): Promise<{ view: SessionView; previousState: string }> {
    let previousState = '';
    const view = await this.write(caller, req.sessionId, req.expectedRevision, async (cur, latest) => {
      const t = findTransition(latest.stateMachine, cur.state, req.event);
      if (!t) {
        throw failedPrecondition(
          `event ${quote(req.event)} is not allowed in state ${quote(cur.state)} of model type ${clip(latest.name, 64)} version ${latest.schemaVersion}`,
          'TRANSITION_NOT_ALLOWED',
          [{ type: 'TRANSITION', subject: `state/${clip(cur.state, 64)}/event/${clip(req.event, 64)}`, description: 'no transition of the state machine leaves this state on this event' }],
          new Map([['state', cur.state], ['event', req.event]]),
        );
      }
      if (t.actor && req.actor && req.actor !== t.actor) {
        throw invalidArgument('actor', `event ${JSON.stringify(req.event)} from ${JSON.stringify(t.fromState)} is spoken by ${t.actor}, not ${req.actor}`);
      }
      const actor = t.actor || req.actor;
      if (!actor) {
        throw invalidArgument('actor', `event ${JSON.stringify(req.event)} from ${JSON.stringify(t.fromState)} names no actor: send system, assistant or user`);
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
          { kind: 'state_changed', payload: { from_state: t.fromState, to_state: t.toState, event: req.event, actor, actor_input: req.actorInput } },
          { kind: 'dialogue_appended', payload: dialoguePayload(cur.dialogueLength + 1, element) },
        ],
      };
    });
    return { view, previousState };
  }

  async appendDialogue(
    caller: Principal,
    req: { sessionId: string; actor: Actor; actorText: string; expectedRevision: number },
  ): Promise<SessionView> {
    return this.write(caller, req.sessionId, req.expectedRevision, async (cur) => {
      const element = { actor: req.actor, actorText: req.actorText, event: '', timestamp: new Date() };
      return {
        ...cur,
        // The spec's `actor`/`actor_input` are whoever spoke last, with or without a transition.
        actor: req.actor,
        actorInput: req.actorText,
        dialogue: [element],
        events: [{ kind: 'dialogue_appended', payload: dialoguePayload(cur.dialogueLength + 1, element) }],
      };
    });
  }

  async formatDialogue(caller: Principal, id: string, format: DialogueFormatName, revision: number): Promise<string> {
    const { dialogue } = revision ? await this.readAt(caller, id, revision) : await this.readCurrent(caller, id);
    return formatDialogue(
      dialogue.map((d) => ({ actor: d.actor, actorText: d.actorText, timestamp: d.timestamp })),
      format,
    );
  }

  // ---------------------------------------------------------------------------------------------------
  // Secondary storage

  async putSecondary(
    caller: Principal,
    req: { sessionId: string; key: string; value: Buffer; expectedRevision: number },
  ): Promise<{ revision: number; createdAt: Date }> {
    const view = await this.write(caller, req.sessionId, req.expectedRevision, async (cur, _latest, q) => {
      if (await this.repo.secondaryExists(req.sessionId, req.key, q)) {
        throw alreadyExists`secondary storage key ${JSON.stringify(req.key)} of session ${req.sessionId} (values are write-once)`;
      }
      return {
        ...cur,
        dialogue: [],
        secondary: { key: req.key, value: req.value },
        events: [{ kind: 'secondary_put', payload: { key: req.key, size_bytes: req.value.length } }],
      };
    });
    return { revision: view.session.revision, createdAt: view.session.updatedAt };
  }

  async getSecondary(caller: Principal, sessionId: string, key: string) {
    if (!(await this.repo.sessionExists(caller.accountId, sessionId))) throw notFound`session ${sessionId}`;
    const found = await this.repo.secondary(sessionId, key);
    if (!found) throw notFound`secondary storage key ${JSON.stringify(key)} of session ${sessionId}`;
    return found;
  }

  async listSecondaryKeys(caller: Principal, sessionId: string, pageSize: number, pageToken: string | undefined) {
    if (!(await this.repo.sessionExists(caller.accountId, sessionId))) throw notFound`session ${sessionId}`;
    const filters = { sessionId };
    const after = decodePageToken(pageToken, 'secondary_keys', filters, keyCursor);
    const rows = await this.repo.listSecondary(sessionId, after, pageSize + 1);
    const items = rows.slice(0, pageSize);
    const last = items[items.length - 1];
    return { items, nextPageToken: rows.length > pageSize && last ? encodePageToken('secondary_keys', filters, last.key) : '' };
  }

  // ---------------------------------------------------------------------------------------------------

  /**
   * The common write: lock, check the expected revision, upgrade the stored data to the latest version (so
   * the write stores it at that version), let `apply` decide, commit one revision, evict, publish.
   */
  private async write(
    caller: Principal,
    id: string,
    expectedRevision: number,
    apply: (
      cur: StoredSession & { schemaVersion: number },
      latest: ModelTypeRow,
      q: Parameters<Parameters<GenieRepo['writeSession']>[2]>[1],
    ) => Promise<Omit<SessionWrite, 'schemaVersion'> & Partial<Pick<SessionWrite, 'schemaVersion'>>>,
  ): Promise<SessionView> {
    let versions: ModelTypeRow[] = [];
    const r = await this.repo.writeSession(caller.accountId, id, async (stored, q) => {
      checkRevision(stored, expectedRevision);
      versions = await this.repo.modelTypeVersions(caller.accountId, stored.modelType, q);
      const up = upgrade(stored, versions, stored.modelType);
      const latest = versions[versions.length - 1] as ModelTypeRow;
      const w = await apply({ ...stored, ...up }, latest, q);
      return { ...w, schemaVersion: up.schemaVersion };
    });
    await this.afterCommit(r);
    return present(r.session, r.dialogue, versions);
  }

  private async afterCommit(r: WriteResult): Promise<void> {
    await afterCommit(
      () => this.cache.evict(r.session.id),
      () => this.cache.publish(r.events),
    );
  }

  private async readCurrent(caller: Principal, id: string) {
    const { copy: hot, token } = await this.cache.get(id);
    if (hot && hot.session.accountId === caller.accountId) {
      const versions = await this.versionsFor(caller.accountId, hot.session.modelType, hot.session.schemaVersion);
      return { ...hot, versions };
    }
    let versions: ModelTypeRow[] = [];
    const found = await this.repo.currentSession(caller.accountId, id, async (session, dialogue, q) => {
      versions = await this.repo.modelTypeVersions(caller.accountId, session.modelType, q);
      const ttl = versions[versions.length - 1]?.cacheTtlSeconds || DEFAULT_CACHE_TTL_SECONDS;
      await this.cache.put({ session, dialogue }, token, ttl * 1000);
    });
    if (!found) throw notFound`session ${id}`;
    return { ...found, versions };
  }

  private async readAt(caller: Principal, id: string, revision: number) {
    const found = await this.repo.sessionAt(caller.accountId, id, revision);
    if (!found) {
      if (await this.repo.sessionExists(caller.accountId, id)) throw notFound`revision ${revision} of session ${id}`;
      throw notFound`session ${id}`;
    }
    const versions = await this.versionsFor(caller.accountId, found.session.modelType, found.session.schemaVersion);
    return { ...found, versions };
  }
}

function checkRevision(cur: StoredSession, expected: number): void {
  if (expected && expected !== cur.revision) {
    throw revisionMismatch(cur.revision, `session ${cur.id} is at revision ${cur.revision}, not the expected ${expected}; nothing was written`);
  }
}

function present(stored: StoredSession, dialogue: DialogueRow[] | undefined, versions: readonly ModelTypeDef[]): SessionView {
  const up = upgrade(stored, versions, stored.modelType);
  const session = { ...stored, ...up };
  return { session, dialogue, currentResponse: dialogue?.[dialogue.length - 1] };
}

function dialoguePayload(seq: number, e: { actor: Actor; actorText: string; event: string; timestamp: Date }) {
  return { seq, actor: e.actor, actor_text: e.actorText, event: e.event, timestamp: e.timestamp.toISOString() };
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

/**
 * Sets (or, when `source` lacks it, removes) the value at `path` of a copy of `fields`. An intermediate
 * value that is not an object cannot hold the path: INVALID_ARGUMENT on update_mask.
 */
function setPath(fields: Record<string, unknown>, path: string[], source: Record<string, unknown>): Record<string, unknown> {
  const out = structuredClone(fields);
  let src: unknown = source;
  for (const seg of path) src = isObject(src) ? ownValue(src, seg) : undefined;
  let node: Record<string, unknown> = out;
  for (const [i, seg] of path.slice(0, -1).entries()) {
    const next = ownValue(node, seg);
    if (next === undefined) {
      if (src === undefined) return out;
      setOwn(node, seg, {});
    } else if (!isObject(next)) {
      throw invalidArgument('update_mask', `${quote(`fields.${path.slice(0, i + 1).join('.')}`)} is not an object`);
    }
    node = ownValue(node, seg) as Record<string, unknown>;
  }
  const leaf = path[path.length - 1] as string;
  if (src === undefined) delete node[leaf];
  else setOwn(node, leaf, structuredClone(src));
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
