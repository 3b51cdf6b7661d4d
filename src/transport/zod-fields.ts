import { z } from 'zod';

/** Proto3 has no null: an empty string means "not set". */
export const optionalString = z
  .string()
  .optional()
  .transform((s) => (s === '' || s === undefined ? undefined : s));

export const uuid = z.string().uuid('must be a UUID');

export const optionalUuid = optionalString.pipe(uuid.optional());


/** The reason a size refusal carries (validate.ts reports it before any other violation). */
export const FIELD_TOO_LARGE = 'FIELD_TOO_LARGE';

const measure = { characters: (s: string) => [...s].length, bytes: (s: string) => Buffer.byteLength(s, 'utf8') };

/**
 * Text of at most `max` units, FIELD_TOO_LARGE past it. The unit is named in the message, because the limits
 * differ by service: admin fields count characters (Unicode code points), prompt and genie fields UTF-8 bytes.
 */
export function textOfAtMost(max: number, unit: 'characters' | 'bytes') {
  return z.string().check((ctx) => {
    // UTF-16 length bounds both counts from one side: no need to measure short strings.
    if (unit === 'characters' ? ctx.value.length <= max : ctx.value.length * 3 <= max) return;
    const n = measure[unit](ctx.value);
    if (n > max) ctx.issues.push({ code: 'custom', input: ctx.value, message: `is ${n} ${unit}; at most ${max} are allowed`, params: { reason: FIELD_TOO_LARGE } });
  });
}
