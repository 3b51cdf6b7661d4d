import { z } from 'zod';
import type { Codec } from './ports/unit-of-work.js';

/**
 * The one JSON codec for rows and events. Whatever comes back as JSON — a jsonb column, a bus message, a
 * cached copy, a stored request result — is checked against the schema that describes it instead of being
 * cast, so a corrupt or foreign value fails here, by name, rather than deep inside a use case. Dates travel
 * as ISO strings and the schema revives them (`isoDate`).
 */
export function zodCodec<T>(schema: z.ZodType<T>): Codec<T> {
  return { encode: (value) => value, decode: (json) => schema.parse(json) };
}

/** A Date, from a Date (a driver's value) or its ISO text (JSON). */
export const isoDate = z.coerce.date();

export function encodeJson<T>(codec: Codec<T>, value: T): string {
  return JSON.stringify(codec.encode(value));
}

/** Throws on text that is no JSON or does not match the codec's schema; callers treat that as absent. */
export function decodeJson<T>(codec: Codec<T>, text: string): T {
  return codec.decode(JSON.parse(text));
}
