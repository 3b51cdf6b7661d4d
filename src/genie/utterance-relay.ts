import { decodeJson, encodeJson } from '../json-codec.js';
import type { Bus } from '../ports/bus.js';
import type { DeltaLog } from '../ports/deltas.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { busMessageCodec, sessionChannel, utteranceAborted, utteranceDelta, type EphemeralEvent } from './events.js';

type Delta = Extract<EphemeralEvent, { type: 'utterance_delta' }>;

/**
 * The live side of streamed utterances: each delta goes to the session's watchers (local ones at once, other
 * replicas through the bus) and into the session's delta log while the utterance is in flight, so a watcher
 * that joins mid-utterance can be sent what it missed. The log write is issued before the publish, on the
 * same connection in the same tick, so a watcher that subscribed and then reads the log finds every delta
 * it did not receive live. Failures are contained: deltas are best effort, the commit is the record.
 */
export class UtteranceRelay {
  constructor(
    private readonly bus: Bus,
    private readonly deltas: DeltaLog,
    /** How long a log outlives its last delta: longer than a worker may stay silent mid-utterance. */
    private readonly ttlMs: number,
    private readonly telemetry: Telemetry = noTelemetry,
  ) {}

  async delta(sessionId: string, d: Omit<Delta, 'type' | 'v'>): Promise<void> {
    const message = encodeJson(busMessageCodec, utteranceDelta(d));
    const kept = this.deltas.append(sessionId, d.utteranceId, message, this.ttlMs).catch((err: unknown) => this.telemetry.contained('delta_log', err));
    const sent = this.publish(sessionId, message);
    await Promise.all([kept, sent]);
  }

  /** The utterance was committed: its deltas are no longer sent to joining watchers. */
  async committed(sessionId: string, utteranceId: string): Promise<void> {
    await this.deltas.end(sessionId, utteranceId, this.ttlMs).catch((err: unknown) => this.telemetry.contained('delta_log', err));
  }

  /** The utterance will not be committed: watchers are told, and its deltas dropped. */
  async aborted(sessionId: string, utteranceId: string, reason: string): Promise<void> {
    await Promise.all([this.publish(sessionId, encodeJson(busMessageCodec, utteranceAborted(utteranceId, reason))), this.committed(sessionId, utteranceId)]);
  }

  /** The deltas of the session's utterances in flight, oldest first; none when the log cannot be read. */
  async inFlight(sessionId: string): Promise<Delta[]> {
    let kept: Array<{ message: string }>;
    try {
      kept = await this.deltas.inFlight(sessionId);
    } catch (err) {
      this.telemetry.contained('delta_log', err);
      return [];
    }
    const out: Delta[] = [];
    for (const { message } of kept) {
      const d = parseDelta(message);
      if (d) out.push(d);
    }
    return out;
  }

  private publish(sessionId: string, message: string): Promise<void> {
    return this.bus.publish(sessionChannel(sessionId), message).catch((err: unknown) => this.telemetry.contained('bus_publish_ephemeral', err));
  }
}

/** A kept delta; one that does not decode (another version, corrupt) is skipped. */
function parseDelta(message: string): Delta | undefined {
  try {
    const m = decodeJson(busMessageCodec, message);
    return m.type === 'utterance_delta' ? m : undefined;
  } catch {
    return undefined;
  }
}
