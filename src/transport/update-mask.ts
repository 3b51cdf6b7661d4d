import { invalidArgument, quote, type FieldViolation } from '../errors.js';

/**
 * AIP-134's field mask, checked one way for every service: each path must name an updatable field of the
 * resource (`*` names them all). Every other path is a violation on `update_mask` naming the path and why:
 * a field in `outputOnly` exists but cannot be changed (output only or immutable), anything else names no
 * field. Reason UPDATE_MASK_INVALID. An empty mask selects nothing here: what it means (required, or "the
 * fields the request sets") is the caller's rule.
 */
export function checkUpdateMask<F extends string>(
  paths: readonly string[],
  updatable: readonly F[],
  outputOnly: ReadonlySet<string> | readonly string[],
  resourceName: string,
): Set<F> {
  const isUpdatable = (p: string): p is F => (updatable as readonly string[]).includes(p);
  const fixed = new Set(outputOnly);
  const choices = `updatable: ${updatable.join(', ')} or *`;
  const fields = new Set<F>();
  const bad: FieldViolation[] = [];
  for (const path of paths) {
    if (path === '*') updatable.forEach((f) => fields.add(f));
    else if (isUpdatable(path)) fields.add(path);
    else {
      const why = fixed.has(path) ? 'cannot be changed (output only or immutable)' : `names no field of ${resourceName}`;
      bad.push({ field: 'update_mask', description: `path ${quote(path)} ${why}; ${choices}` });
    }
  }
  if (bad.length) throw invalidArgument(bad, 'UPDATE_MASK_INVALID');
  return fields;
}
