import { z } from 'zod';

/** Proto3 has no null: an empty string means "not set". */
export const optionalString = z
  .string()
  .optional()
  .transform((s) => (s === '' || s === undefined ? undefined : s));

export const uuid = z.string().uuid('must be a UUID');

export const optionalUuid = optionalString.pipe(uuid.optional());

