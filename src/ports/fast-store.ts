import type { Bus } from './bus.js';
import type { DeltaLog } from './deltas.js';
import type { KvStore } from './kv.js';

/** The fast path and the bus together, as one backend provides them (Redis, or in-process). */
export interface FastStore {
  kind: 'redis' | 'memory';
  kv: KvStore;
  bus: Bus;
  /** Deltas of utterances in flight, for watchers that join mid-utterance. */
  deltas: DeltaLog;
  close(): Promise<void>;
}
