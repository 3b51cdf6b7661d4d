import type { z } from 'zod';
import { AppError, invalidArgument } from './errors.js';
import { fieldPath } from './field-path.js';

/** The ErrorInfo reason a zod issue asks for (`params.reason` of a custom check, e.g. FIELD_TOO_LARGE). */
const reasonOf = (issue: z.core.$ZodIssue): string | undefined =>
  issue.code === 'custom' && typeof issue.params?.reason === 'string' ? issue.params.reason : undefined;

/** The ErrorInfo metadata a custom check attaches (`params.metadata`, string values, e.g. `max_bytes`). */
function metadataOf(issue: z.core.$ZodIssue | undefined): Map<string, string> | undefined {
  const m: unknown = issue?.code === 'custom' ? issue.params?.metadata : undefined;
  if (m === null || typeof m !== 'object') return undefined;
  const entries = Object.entries(m).filter((e): e is [string, string] => typeof e[1] === 'string');
  return entries.length ? new Map(entries) : undefined;
}

/**
 * An RPC's one parse step: its request checked and normalised by a zod schema; a failure becomes
 * INVALID_ARGUMENT listing each bad field by its proto path (field-path.ts). Issues that carry a reason (a
 * size limit) come first and alone: a client told FIELD_TOO_LARGE knows what to fix before anything else.
 * The first such issue's metadata (a limit) goes out with the reason.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const reason = r.error.issues.map(reasonOf).find((x) => x !== undefined);
  const issues = reason ? r.error.issues.filter((i) => reasonOf(i) === reason) : r.error.issues;
  const e = invalidArgument(
    issues.map((i) => ({ field: fieldPath(i.path, prefix), description: i.message })),
    reason,
  );
  const metadata = reason ? metadataOf(issues[0]) : undefined;
  throw metadata ? new AppError(e.code, e.message, e.violations, { reason, metadata }) : e;
}
