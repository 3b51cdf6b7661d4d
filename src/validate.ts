import type { z } from 'zod';
import { invalidArgument } from './errors.js';
import { fieldPath } from './field-path.js';

/** The ErrorInfo reason a zod issue asks for (`params.reason` of a custom check, e.g. FIELD_TOO_LARGE). */
const reasonOf = (issue: z.core.$ZodIssue): string | undefined =>
  issue.code === 'custom' && typeof issue.params?.reason === 'string' ? issue.params.reason : undefined;

/**
 * An RPC's one parse step: its request checked and normalised by a zod schema; a failure becomes
 * INVALID_ARGUMENT listing each bad field by its proto path (field-path.ts). Issues that carry a reason (a
 * size limit) come first and alone: a client told FIELD_TOO_LARGE knows what to fix before anything else.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const reason = r.error.issues.map(reasonOf).find((x) => x !== undefined);
  const issues = reason ? r.error.issues.filter((i) => reasonOf(i) === reason) : r.error.issues;
  throw invalidArgument(
    issues.map((i) => ({ field: fieldPath(i.path, prefix), description: i.message })),
    reason,
  );
}
