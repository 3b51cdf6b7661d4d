import { z } from 'zod';
import { zodCodec } from '../json-codec.js';

// What the admin aggregate tells other replicas. There is no admin event log and no admin watch: the only
// listener is every replica's principal cache (cache.ts), which must stop accepting a key that was revoked
// or deleted elsewhere. A prompt deleted with its owner (a profile, an LLM client or an account) is the
// prompt aggregate's event: it goes to the composition root's onPromptsDeleted (see service.ts), which
// announces it as such.

/** The bus channel of admin events. The bus is at-most-once: the caches' TTLs bound what a lost one costs. */
export const ADMIN_EVENTS_CHANNEL = 'admin:events';

const keyGone = <T extends string>(type: T) => z.object({ type: z.literal(type), v: z.literal(1), secretHash: z.string() });

export const adminEvent = z.discriminatedUnion('type', [
  /** A key was revoked: its principal must be refused at once. */
  keyGone('api_key_revoked'),
  /** A key was deleted, alone or with its profile or account. */
  keyGone('api_key_deleted'),
]);
export type AdminEvent = z.infer<typeof adminEvent>;

/** Events go to the bus as JSON and are checked against the schema on the way back (json-codec.ts). */
export const adminEventCodec = zodCodec(adminEvent);
