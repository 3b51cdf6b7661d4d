/**
 * How big a model type's JSON Schema may be. Compiling is superlinear in neither, but it runs on the event
 * loop every tenant shares and its result is cached, so both bound what one registration can cost.
 */

/** Serialized (JSON, UTF-8) size of a schema. */
export const MAX_SCHEMA_BYTES = 64 * 1024;
/** Nesting of JSON objects and arrays: `{}` is 1, `{"properties": {"a": {}}}` is 3. */
export const MAX_SCHEMA_DEPTH = 32;

/** Why `schema` is too big, or undefined. Walks iteratively, so a very deep schema cannot overflow the stack. */
export function schemaSizeProblem(schema: Record<string, unknown>): string | undefined {
  const stack: Array<{ value: unknown; depth: number }> = [{ value: schema, depth: 1 }];
  while (stack.length) {
    const { value, depth } = stack.pop()!;
    if (depth > MAX_SCHEMA_DEPTH) return `nests deeper than ${MAX_SCHEMA_DEPTH} levels`;
    const children = Array.isArray(value) ? value : value !== null && typeof value === 'object' ? Object.values(value) : [];
    for (const child of children) if (child !== null && typeof child === 'object') stack.push({ value: child, depth: depth + 1 });
  }
  const bytes = Buffer.byteLength(JSON.stringify(schema));
  if (bytes > MAX_SCHEMA_BYTES) return `is ${bytes} bytes as JSON; at most ${MAX_SCHEMA_BYTES} are allowed`;
  return undefined;
}
