import type { ClientReadableStream, Metadata, ServiceError } from '@grpc/grpc-js';
import type { GenieServiceClient, SessionUpdate, WatchSessionRequest, WatchSessionResponse } from '../../src/gen/parley/genie/v1/genie.js';

/** A WatchSession stream whose updates a test can wait for. */
export class Watcher {
  readonly updates: SessionUpdate[] = [];
  error: ServiceError | undefined;
  ended = false;
  private waiters: Array<() => void> = [];
  readonly call: ClientReadableStream<WatchSessionResponse>;

  constructor(client: GenieServiceClient, md: Metadata, sessionId: string, afterRevision?: number, afterDeltas: WatchSessionRequest['afterDeltas'] = []) {
    this.call = client.watchSession({ sessionId, afterRevision, afterDeltas, snapshot: undefined }, md);
    this.call.on('data', (r: WatchSessionResponse) => {
      if (r.update) this.updates.push(r.update);
      this.wake();
    });
    this.call.on('error', (e: ServiceError) => {
      this.error = e;
      this.wake();
    });
    this.call.on('end', () => {
      this.ended = true;
      this.wake();
    });
  }

  /** The revision of the caught_up update, once it arrived. */
  caughtUp(): number | undefined {
    return this.updates.find((u) => u.caughtUp)?.revision;
  }

  /** Committed revisions received, in order. */
  revisions(): number[] {
    return this.updates.filter((u) => u.commit).map((u) => u.revision);
  }

  /** Waits until `pred` holds or the stream fails/ends; throws after timeoutMs with what was seen. */
  async until(pred: (w: Watcher) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this)) {
      if (this.error || this.ended) {
        if (pred(this)) return;
        throw new Error(`stream ${this.error ? `failed (${this.error.code} ${this.error.details})` : 'ended'} before ${what}; revisions ${this.revisions().join(',')}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; revisions seen: ${this.revisions().join(',')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }

  cancel(): void {
    this.call.cancel();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
