import { MAX_DELTA_LOG_ENTRIES, type DeltaLog } from '../ports/deltas.js';

interface Entry {
  utteranceId: string;
  /** Undefined for the end marker of an utterance. */
  message: string | undefined;
}

interface Log {
  entries: Entry[];
  expiresAt: number;
}

/** The in-process delta log of the embedded default: the same contract as Redis streams (test/storage/deltas.contract.test.ts). */
export class MemoryDeltaLog implements DeltaLog {
  private readonly logs = new Map<string, Log>();

  constructor(private readonly now: () => number = Date.now) {}

  async append(sessionId: string, utteranceId: string, message: string, ttlMs: number): Promise<void> {
    this.add(sessionId, { utteranceId, message }, ttlMs);
  }

  async end(sessionId: string, utteranceId: string, ttlMs: number): Promise<void> {
    const log = this.add(sessionId, { utteranceId, message: undefined }, ttlMs);
    const ended = endedIn(log.entries);
    const first = log.entries.findIndex((e) => !ended.has(e.utteranceId));
    if (first < 0) this.logs.delete(sessionId);
    else log.entries.splice(0, first);
  }

  async inFlight(sessionId: string): Promise<Array<{ utteranceId: string; message: string }>> {
    const log = this.live(sessionId);
    if (!log) return [];
    const ended = endedIn(log.entries);
    const out: Array<{ utteranceId: string; message: string }> = [];
    for (const e of log.entries) if (e.message !== undefined && !ended.has(e.utteranceId)) out.push({ utteranceId: e.utteranceId, message: e.message });
    return out;
  }

  private live(sessionId: string): Log | undefined {
    const log = this.logs.get(sessionId);
    if (log && log.expiresAt <= this.now()) {
      this.logs.delete(sessionId);
      return undefined;
    }
    return log;
  }

  private add(sessionId: string, entry: Entry, ttlMs: number): Log {
    // Expired logs of sessions no longer written are swept on the way, so the map stays bounded by live ones.
    this.sweep();
    let log = this.live(sessionId);
    if (!log) this.logs.set(sessionId, (log = { entries: [], expiresAt: 0 }));
    log.entries.push(entry);
    if (log.entries.length > MAX_DELTA_LOG_ENTRIES) log.entries.splice(0, log.entries.length - MAX_DELTA_LOG_ENTRIES);
    log.expiresAt = this.now() + ttlMs;
    return log;
  }

  private sweeps = 0;
  private sweep(): void {
    if (++this.sweeps % 1024 !== 0) return;
    const now = this.now();
    for (const [k, log] of this.logs) if (log.expiresAt <= now) this.logs.delete(k);
  }
}

function endedIn(entries: readonly Entry[]): Set<string> {
  const ended = new Set<string>();
  for (const e of entries) if (e.message === undefined) ended.add(e.utteranceId);
  return ended;
}
