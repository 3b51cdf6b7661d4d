/**
 * The deltas of utterances in flight, kept so a watcher that joins or resumes mid-utterance can be sent
 * what it missed. One log per session; each entry is one delta (an encoded bus message) of one utterance.
 * An utterance is in flight from its first delta until `end` (committed or given up); only deltas of
 * utterances in flight are returned. Nothing here is the record: the commit carries the whole text, and the
 * log may vanish with Redis (a joining watcher then simply gets fewer deltas).
 *
 * Bounds: a log expires `ttlMs` after its last append or end; it never holds more than MAX_DELTA_LOG_ENTRIES
 * entries (the oldest are dropped past that, which a watcher sees as a gap in chunk indexes).
 */
export interface DeltaLog {
  /** Appends a delta of `utteranceId` to the session's log. */
  append(sessionId: string, utteranceId: string, message: string, ttlMs: number): Promise<void>;
  /** Marks the utterance done: its deltas are no longer returned, and are dropped once no earlier utterance is in flight. */
  end(sessionId: string, utteranceId: string, ttlMs: number): Promise<void>;
  /** The deltas of the session's utterances in flight, in the order they were appended. */
  inFlight(sessionId: string): Promise<Array<{ utteranceId: string; message: string }>>;
}

/** At most this many entries per session log (a sanity bound: utterances are bounded far below it). */
export const MAX_DELTA_LOG_ENTRIES = 100_000;
