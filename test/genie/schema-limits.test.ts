import test from 'ava';
import { MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, schemaSizeProblem } from '../../src/genie/schema-limits.js';

/** `{"not": {"not": … {} …}}`, `depth` objects deep. */
function nested(depth: number): Record<string, unknown> {
  let s: Record<string, unknown> = {};
  for (let i = 1; i < depth; i++) s = { not: s };
  return s;
}

test('a schema may nest MAX_SCHEMA_DEPTH levels of objects and arrays, not one more', (t) => {
  t.is(schemaSizeProblem(nested(MAX_SCHEMA_DEPTH)), undefined);
  t.is(schemaSizeProblem(nested(MAX_SCHEMA_DEPTH + 1)), `nests deeper than ${MAX_SCHEMA_DEPTH} levels`);
  // Arrays count as levels too: allOf: [ {…} ] is two.
  let s: Record<string, unknown> = {};
  for (let i = 0; i < MAX_SCHEMA_DEPTH / 2; i++) s = { allOf: [s] };
  t.regex(schemaSizeProblem(s) ?? '', /nests deeper/);
});

test('a very deep schema is refused without overflowing the stack', (t) => {
  t.regex(schemaSizeProblem(nested(200_000)) ?? '', /nests deeper/);
});

test('a schema may be MAX_SCHEMA_BYTES of JSON, not one byte more, and the reason is short', (t) => {
  const frame = JSON.stringify({ description: '' }).length;
  const atLimit = { description: 'x'.repeat(MAX_SCHEMA_BYTES - frame) };
  t.is(Buffer.byteLength(JSON.stringify(atLimit)), MAX_SCHEMA_BYTES);
  t.is(schemaSizeProblem(atLimit), undefined);
  const over = { description: 'x'.repeat(MAX_SCHEMA_BYTES - frame + 1) };
  t.is(schemaSizeProblem(over), `is ${MAX_SCHEMA_BYTES + 1} bytes as JSON; at most ${MAX_SCHEMA_BYTES} are allowed`);
  // Bytes, not characters: é is two.
  t.regex(schemaSizeProblem({ description: 'é'.repeat(MAX_SCHEMA_BYTES / 2) }) ?? '', /bytes as JSON/);
});
