import type { z } from 'zod';
import { invalidArgument } from './errors.js';

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * Parses input with a zod schema; a failure becomes INVALID_ARGUMENT listing each bad field by its proto
 * (snake_case) path, so a client in any language can find the field it sent.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw invalidArgument(
    r.error.issues.map((i) => ({
      field: prefix + (i.path.map((p) => (typeof p === 'string' ? snake(p) : String(p))).join('.') || '(request)'),
      description: i.message,
    })),
  );
}
