import { invalidArgument } from '../../src/errors.js';
import type { SessionCommit, SessionEvent } from '../../src/genie/events.js';
import type { ModelTypeDef, ModelTypeRow } from '../../src/genie/model-type.js';
import type {
  DialogueRow,
  ForkSource,
  ModelTypeStore,
  NewSession,
  RemovedContent,
  SecondaryMeta,
  SessionCursor,
  SessionFilter,
  SessionOrder,
  SessionEventLog,
  SessionStore,
  SessionWrite,
  StoredSession,
  WriteResult,
} from '../../src/genie/store.js';
import type { Codec, RequestKey, Tx, UnitOfWork } from '../../src/ports/unit-of-work.js';
import type { Actor } from '../../src/genie/dialogue-format.js';
import type { TokenizerEncoding } from '../../src/genie/tokens.js';

interface State {
  types: Array<ModelTypeRow & { accountId: string }>;
  sessions: Array<StoredSession & { deleted: boolean }>;
  revisions: StoredSession[];
  dialogue: Array<DialogueRow & { sessionId: string }>;
  secondary: Array<SecondaryMeta & { sessionId: string; value: Buffer }>;
  events: Array<{ sessionId: string; revision: number; event: SessionEvent }>;
  claims: Map<string, { method: string; fingerprint: string; response: string; subject: string | undefined }>;
}

const copy = <T>(v: T): T => structuredClone(v);

/**
 * Genie's stores and unit of work in memory, for use-case tests without a database. Transactions run one
 * at a time (so every lock holds), and a failed one puts the state back as it found it.
 */
export class MemoryGenieStore implements ModelTypeStore, SessionStore, SessionEventLog, UnitOfWork {
  private state: State = { types: [], sessions: [], revisions: [], dialogue: [], secondary: [], events: [], claims: new Map() };
  private queue: Promise<unknown> = Promise.resolve();
  /** Counts reads of model type versions (the use cases cache them per process). */
  typeReads = 0;

  async run<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>, subjectOf?: (value: T) => string): Promise<{ value: T; replayed: boolean }> {
    const turn = this.queue.then(() => this.runNow(key, codec, work, subjectOf));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async runNow<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>, subjectOf?: (value: T) => string): Promise<{ value: T; replayed: boolean }> {
    const claimKey = `${key.scope}\u0000${key.requestId}`;
    const first = key.requestId ? this.state.claims.get(claimKey) : undefined;
    if (first) {
      if (first.method !== key.method || first.fingerprint !== key.fingerprint) throw invalidArgument('request_id', 'was already used', 'REQUEST_ID_REUSED');
      return { value: codec.decode(JSON.parse(first.response)), replayed: true };
    }
    const before = copy(this.state);
    try {
      // The memory store's transactions carry nothing: the brand only keeps domain code from making one.
      const value = await work({} as Tx);
      if (key.requestId) {
        this.state.claims.set(claimKey, { method: key.method, fingerprint: key.fingerprint, response: JSON.stringify(codec.encode(value) ?? null), subject: subjectOf?.(value) });
      }
      return { value, replayed: false };
    } catch (err) {
      this.state = before;
      throw err;
    }
  }

  // Model types

  async lockModelTypeName(): Promise<void> {}

  async insertModelType(accountId: string, def: ModelTypeDef): Promise<ModelTypeRow | undefined> {
    if (this.state.types.some((t) => t.accountId === accountId && t.name === def.name && t.schemaVersion === def.schemaVersion)) return undefined;
    const row = { ...copy(def), createdAt: new Date() };
    this.state.types.push({ ...row, accountId });
    return copy(row);
  }

  async modelTypeVersions(accountId: string, name: string): Promise<ModelTypeRow[]> {
    this.typeReads++;
    return this.typesOf(accountId).filter((t) => t.name === name);
  }

  async allModelTypes(accountId: string): Promise<ModelTypeRow[]> {
    return this.typesOf(accountId);
  }

  async listModelTypes(accountId: string, name: string | undefined, after: { name: string; schemaVersion: number } | undefined, limit: number): Promise<ModelTypeRow[]> {
    return this.typesOf(accountId)
      .filter((t) => (!name || t.name === name) && (!after || t.name > after.name || (t.name === after.name && t.schemaVersion > after.schemaVersion)))
      .slice(0, limit);
  }

  private typesOf(accountId: string): ModelTypeRow[] {
    return this.state.types
      .filter((t) => t.accountId === accountId)
      .sort((a, b) => (a.name === b.name ? a.schemaVersion - b.schemaVersion : a.name < b.name ? -1 : 1))
      .map(({ accountId: _, ...t }) => copy(t));
  }

  // Sessions

  private live(accountId: string, id: string) {
    return this.state.sessions.find((s) => s.id === id && s.accountId === accountId && !s.deleted);
  }

  private view(s: StoredSession & { deleted?: boolean }): StoredSession {
    const { deleted: _, ...rest } = s;
    return copy(rest);
  }

  async lockSession(accountId: string, id: string): Promise<StoredSession | undefined> {
    const s = this.live(accountId, id);
    return s && this.view(s);
  }

  async readSession(accountId: string, id: string): Promise<StoredSession | undefined> {
    const s = this.live(accountId, id);
    return s && this.view(s);
  }

  async insertSession(s: NewSession, fork: ForkSource | undefined, events: SessionEvent[]): Promise<WriteResult> {
    const now = new Date();
    const session: StoredSession = {
      ...copy(s),
      revision: 1,
      dialogueLength: fork?.dialogueLength ?? 0,
      dialogueTokenCount: fork?.dialogueTokenCount ?? 0,
      createdAt: now,
      updatedAt: now,
    };
    this.state.sessions.push({ ...session, deleted: false });
    this.state.revisions.push(copy(session));
    if (fork) {
      for (const d of this.state.dialogue.filter((d) => d.sessionId === fork.sessionId && d.seq <= fork.dialogueLength)) {
        this.state.dialogue.push({ ...copy(d), sessionId: s.id, revision: 1 });
      }
    }
    this.log(s.id, 1, events);
    return { session: copy(session), last: await this.element(s.id, session.dialogueLength), commit: { revision: 1, events } };
  }

  async commitRevision(current: StoredSession, w: SessionWrite): Promise<WriteResult> {
    const row = this.state.sessions.find((s) => s.id === current.id);
    if (!row) throw new Error(`no session ${current.id}`);
    const revision = current.revision + 1;
    const now = new Date();
    const appended = w.dialogue.map((d, i) => ({ ...copy(d), seq: current.dialogueLength + i + 1, revision, sessionId: current.id }));
    const { dialogue: _d, secondary, events: _e, ...fields } = w;
    const dialogueTokenCount = row.dialogueTokenCount + appended.reduce((n, d) => n + d.tokenCount, 0);
    Object.assign(row, copy(fields), { revision, dialogueLength: current.dialogueLength + appended.length, dialogueTokenCount, updatedAt: now });
    this.state.revisions.push(this.view(row));
    this.state.dialogue.push(...appended);
    if (secondary) {
      this.state.secondary.push({ sessionId: current.id, key: secondary.key, value: secondary.value, sizeBytes: secondary.value.length, revision, createdAt: now });
    }
    this.log(current.id, revision, w.events);
    return { session: this.view(row), last: await this.element(current.id, row.dialogueLength), commit: { revision, events: w.events } };
  }

  /** Waits for the transaction running now, as the guarded update waits for its lock on the session row. */
  async commitIfAt(current: StoredSession, w: SessionWrite, guard: { latestSchemaVersion: number }): Promise<WriteResult | undefined> {
    if (w.secondary) throw new Error(`session ${current.id}: commitIfAt writes no secondary value (key ${w.secondary.key})`);
    const newer = () => this.state.types.some((t) => t.accountId === current.accountId && t.name === current.modelType && t.schemaVersion > guard.latestSchemaVersion);
    const turn = this.queue.then(() =>
      this.live(current.accountId, current.id)?.revision === current.revision && !newer() ? this.commitRevision(current, w) : undefined,
    );
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  async tombstone(current: { id: string; revision: number }, events: SessionEvent[], now: Date): Promise<SessionCommit & { removed: RemovedContent }> {
    const revision = current.revision + 1;
    const st = this.state;
    const mine = (d: { sessionId: string }) => d.sessionId === current.id;
    const removed = {
      dialogue: st.dialogue.filter(mine).length,
      secondary: st.secondary.filter(mine).length,
      revisions: st.revisions.filter((r) => r.id === current.id).length,
      requestIds: [...st.claims.values()].filter((c) => c.subject === current.id).length,
    };
    st.events = st.events.filter((e) => !mine(e));
    st.dialogue = st.dialogue.filter((d) => !mine(d));
    st.secondary = st.secondary.filter((d) => !mine(d));
    st.revisions = st.revisions.filter((r) => r.id !== current.id);
    for (const [k, c] of st.claims) if (c.subject === current.id) st.claims.delete(k);
    const row = st.sessions.find((s) => s.id === current.id);
    if (row) Object.assign(row, { state: '', actor: '', actorInput: '', fields: {}, dialogueLength: 0, dialogueTokenCount: 0, expireTime: undefined, endUserId: undefined, revision, updatedAt: now, deleted: true });
    this.log(current.id, revision, events);
    return { revision, events, removed };
  }

  private log(sessionId: string, revision: number, events: SessionEvent[]): void {
    for (const event of events) this.state.events.push({ sessionId, revision, event: copy(event) });
  }

  async sessionAt(accountId: string, id: string, revision: number): Promise<{ session: StoredSession; dialogue: DialogueRow[] } | undefined> {
    if (!this.live(accountId, id)) return undefined;
    const r = this.state.revisions.find((x) => x.id === id && x.revision === revision);
    return r && { session: copy(r), dialogue: await this.dialogue(id, r.dialogueLength) };
  }

  async sessionExists(accountId: string, id: string): Promise<boolean> {
    return !!this.live(accountId, id);
  }

  async element(sessionId: string, seq: number): Promise<DialogueRow | undefined> {
    const d = this.state.dialogue.find((x) => x.sessionId === sessionId && x.seq === seq);
    return d && row(d);
  }

  async dialogue(sessionId: string, upToSeq: number): Promise<DialogueRow[]> {
    return this.state.dialogue.filter((d) => d.sessionId === sessionId && d.seq <= upToSeq).map(row);
  }

  async dialogueTail(sessionId: string, upToSeq: number, n: number): Promise<DialogueRow[]> {
    return n <= 0 ? [] : (await this.dialogue(sessionId, upToSeq)).slice(-n);
  }

  async dialoguePage(sessionId: string, afterSeq: number, upToSeq: number, limit: number): Promise<DialogueRow[]> {
    return (await this.dialogue(sessionId, upToSeq)).filter((d) => d.seq > afterSeq).slice(0, limit);
  }

  async dialogueHead(accountId: string, id: string, revision: number | undefined): Promise<{ revision: number; dialogueLength: number; tokenEncoding: TokenizerEncoding } | undefined> {
    const s = this.live(accountId, id);
    const r = s && (revision === undefined ? s : this.state.revisions.find((x) => x.id === id && x.revision === revision));
    return s && r && { revision: r.revision, dialogueLength: r.dialogueLength, tokenEncoding: s.tokenEncoding };
  }

  async systemElements(sessionId: string, upToSeq: number): Promise<DialogueRow[]> {
    return (await this.dialogue(sessionId, upToSeq)).filter((d) => d.actor === 'system');
  }

  async tokenCountsBefore(sessionId: string, beforeSeq: number, limit: number): Promise<Array<{ seq: number; actor: Actor; tokenCount: number }>> {
    return this.state.dialogue
      .filter((d) => d.sessionId === sessionId && d.seq < beforeSeq)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, limit)
      .map((d) => ({ seq: d.seq, actor: d.actor, tokenCount: d.tokenCount }));
  }

  async dialogueRange(sessionId: string, from: number, to: number): Promise<DialogueRow[]> {
    return (await this.dialogue(sessionId, to)).filter((d) => d.seq >= from);
  }

  async dialogueLengthAt(accountId: string, id: string, revision: number | undefined): Promise<number | undefined> {
    const s = this.live(accountId, id);
    if (!s) return undefined;
    return revision === undefined ? s.dialogueLength : this.state.revisions.find((r) => r.id === id && r.revision === revision)?.dialogueLength;
  }

  async listSessions(
    accountId: string,
    filter: SessionFilter,
    order: SessionOrder,
    after: SessionCursor | undefined,
    limit: number,
  ): Promise<Array<{ seq: number; at: string | undefined; session: StoredSession; last: DialogueRow | undefined }>> {
    const timeOf = (s: StoredSession) => (order.by === 'created' ? s.createdAt : s.updatedAt).toISOString();
    const key = (seq: number, at: string | undefined) => [order.by === 'seq' ? '' : (at ?? ''), seq] as const;
    const cmp = (a: readonly [string, number], b: readonly [string, number]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]) * (order.desc ? -1 : 1);
    const matched = this.matching(accountId, filter)
      .map(({ seq, s }) => ({ seq, s, at: order.by === 'seq' ? undefined : timeOf(s) }))
      .filter((r) => !after || cmp(key(r.seq, r.at), key(after.seq, after.at)) > 0)
      .sort((a, b) => cmp(key(a.seq, a.at), key(b.seq, b.at)))
      .slice(0, limit);
    const out: Array<{ seq: number; at: string | undefined; session: StoredSession; last: DialogueRow | undefined }> = [];
    for (const r of matched) out.push({ seq: r.seq, at: r.at, session: this.view(r.s), last: await this.element(r.s.id, r.s.dialogueLength) });
    return out;
  }

  async countSessions(accountId: string, filter: SessionFilter): Promise<number> {
    return this.matching(accountId, filter).length;
  }

  private matching(accountId: string, filter: SessionFilter) {
    const ops = { '=': (a: number, b: number) => a === b, '<': (a: number, b: number) => a < b, '<=': (a: number, b: number) => a <= b, '>': (a: number, b: number) => a > b, '>=': (a: number, b: number) => a >= b };
    return [...this.state.sessions.entries()]
      .map(([i, s]) => ({ seq: i + 1, s }))
      .filter(({ s }) => {
        if (s.accountId !== accountId || s.deleted || (filter.modelType && s.modelType !== filter.modelType)) return false;
        if (filter.endUserId && s.endUserId !== filter.endUserId) return false;
        if (filter.states && !filter.states.some((f) => f.modelType === s.modelType && f.schemaVersion === s.schemaVersion && f.states.includes(s.state))) return false;
        if (filter.labels?.some((l) => !Object.hasOwn(s.labels, l.key) || s.labels[l.key] !== l.value)) return false;
        if (filter.hasLabels?.some((k) => !Object.hasOwn(s.labels, k))) return false;
        return !filter.times?.some((t) => !ops[t.op]((t.column === 'created' ? s.createdAt : s.updatedAt).getTime(), t.at.getTime()));
      });
  }

  async endUserSessions(accountId: string, endUserId: string, limit: number): Promise<string[]> {
    return this.state.sessions
      .filter((s) => s.accountId === accountId && s.endUserId === endUserId && !s.deleted)
      .slice(0, limit)
      .map((s) => s.id);
  }

  async lockExpired(now: Date, limit: number): Promise<Array<{ id: string; revision: number }>> {
    return this.state.sessions
      .filter((s) => !s.deleted && s.expireTime !== undefined && s.expireTime <= now)
      .slice(0, limit)
      .map((s) => ({ id: s.id, revision: s.revision }));
  }

  async dropTombstones(cutoff: Date, limit: number): Promise<number> {
    const gone = this.state.sessions.filter((s) => s.deleted && s.updatedAt < cutoff).slice(0, limit);
    this.state.sessions = this.state.sessions.filter((s) => !gone.includes(s));
    return gone.length;
  }

  async secondaryExists(sessionId: string, key: string): Promise<boolean> {
    return this.state.secondary.some((s) => s.sessionId === sessionId && s.key === key);
  }

  async secondary(sessionId: string, key: string): Promise<(SecondaryMeta & { value: Buffer }) | undefined> {
    const found = this.state.secondary.find((s) => s.sessionId === sessionId && s.key === key);
    return found && { key: found.key, sizeBytes: found.sizeBytes, revision: found.revision, createdAt: found.createdAt, value: Buffer.from(found.value) };
  }

  async listSecondary(sessionId: string, afterKey: string | undefined, limit: number): Promise<SecondaryMeta[]> {
    return this.state.secondary
      .filter((s) => s.sessionId === sessionId && (afterKey === undefined || s.key > afterKey))
      .sort((a, b) => (a.key < b.key ? -1 : 1))
      .slice(0, limit)
      .map(({ key, sizeBytes, revision, createdAt }) => ({ key, sizeBytes, revision, createdAt }));
  }

  // The event log

  async head(sessionId: string): Promise<{ accountId: string; revision: number; deleted: boolean } | undefined> {
    const s = this.state.sessions.find((x) => x.id === sessionId);
    return s && { accountId: s.accountId, revision: s.revision, deleted: s.deleted };
  }

  async commitsAfter(sessionId: string, after: number, limit: number): Promise<SessionCommit[]> {
    const commits: SessionCommit[] = [];
    for (const e of this.state.events.filter((x) => x.sessionId === sessionId && x.revision > after)) {
      let last = commits[commits.length - 1];
      if (!last || last.revision !== e.revision) {
        if (commits.length === limit) break;
        commits.push((last = { revision: e.revision, events: [] }));
      }
      last.events.push(copy(e.event));
    }
    return commits;
  }
}

function row(d: DialogueRow & { sessionId: string }): DialogueRow {
  const { sessionId: _, ...rest } = d;
  return copy(rest);
}
