import type { z } from 'zod';
import { invalidArgument } from './errors.js';
import { fieldPath } from './field-path.js';

/**
 * An RPC's one parse step: its request checked and normalised by a zod schema; a failure becomes
 * INVALID_ARGUMENT listing each bad field by its proto path (field-path.ts).
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw invalidArgument(r.error.issues.map((i) => ({ field: fieldPath(i.path, prefix), description: i.message })));
}
