/**
 * The domain's unit of work. A write runs inside one transaction that the domain only passes along: `Tx` is
 * opaque here, and only the storage adapter that opened it can use it (see storage/knex-tx.ts). Stores take
 * an optional `Tx`; without one they read outside any transaction.
 */
declare const txBrand: unique symbol;
export interface Tx {
  readonly [txBrand]: true;
}

/** What makes a write safe to retry: who asks, which RPC, the client's id, and what exactly it asked. */
export interface RequestKey {
  /** Who may replay the result, e.g. `account:<id>`: one tenant's ids never collide with another's. */
  scope: string;
  /** The RPC, e.g. `parley.prompt.v1.PromptService/AppendHistory`. */
  method: string;
  /** The client's id; undefined runs the work without any record. */
  requestId: string | undefined;
  /** fingerprintOf(the validated request): tells a true retry from a reused id. */
  fingerprint: string;
}

/** How a result goes to JSON and back (it is stored with the request id and replayed from there). */
export interface Codec<T> {
  encode(value: T): unknown;
  decode(json: unknown): T;
}

export interface UnitOfWork {
  /**
   * Runs `work` in one transaction, at most once per request id: the id is claimed and the result stored in
   * that same transaction, so a crash loses both or keeps both and a retry replays the first result
   * (`replayed`). A failure is not remembered; a retry runs again. `subjectOf` names the resource the result
   * repeats, so its stored results can be forgotten when that resource is deleted.
   */
  run<T>(key: RequestKey, codec: Codec<T>, work: (tx: Tx) => Promise<T>, subjectOf?: (value: T) => string): Promise<{ value: T; replayed: boolean }>;
}

/** The key of a transaction that records nothing (no request id: UnitOfWork.run claims nothing). */
export const UNRECORDED: RequestKey = { scope: '', method: '', requestId: undefined, fingerprint: '' };

/** The codec of such a transaction: its answer is never recorded, so it is never decoded. */
export function unrecorded<T>(): Codec<T> {
  return {
    encode: (v) => v,
    decode: () => {
      throw new Error('a transaction without a request id has no recorded answer');
    },
  };
}
