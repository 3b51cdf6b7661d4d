import test from 'ava';
import { createRequire } from 'node:module';
import { compileProblem, fieldViolations, schemaEngineStats, schemaProblem } from '../../src/genie/json-schema.js';
import { MAX_MATCH_INPUT } from '../../src/genie/linear-regex.js';

const withPattern = (pattern: string) => ({ type: 'object', properties: { code: { type: 'string', pattern } } });
const fields = (vs: Array<{ field: string }>) => vs.map((v) => v.field).sort();
// 2^48 backtracking steps for RegExp; the old code never returned.
const EVIL_VALUE = `${'a'.repeat(48)}!`;

test('pattern runs in linear time: a catastrophic-backtracking pattern answers with a violation', (t) => {
  const vs = fieldViolations(withPattern('^(a+)+$'), { code: EVIL_VALUE });
  t.deepEqual(fields(vs), ['fields.code']);
  t.is(vs[0]?.description, 'must match the pattern "^(a+)+$"');
  t.deepEqual(fieldViolations(withPattern('^(a+)+$'), { code: 'aaaa' }), []);
});

test('patternProperties run in linear time too, also where additionalProperties tests them', (t) => {
  const schema = { type: 'object', patternProperties: { '^(a+)+$': { type: 'integer' } }, additionalProperties: false };
  const vs = fieldViolations(schema, { [EVIL_VALUE]: 1, aaaa: 'x', aa: 2 });
  t.deepEqual(fields(vs), [`fields.${EVIL_VALUE}`, 'fields.aaaa'].sort());
  const names = fieldViolations({ type: 'object', propertyNames: { pattern: '^(a+)+$' } }, { [EVIL_VALUE]: 1, aaa: 2 });
  t.deepEqual([...new Set(fields(names))], [`fields.${EVIL_VALUE}`]);
});

test('a pattern RE2 cannot run is refused when compiling, briefly and without repeating it', (t) => {
  const long = `(?=x)${'y'.repeat(900)}`;
  const problem = compileProblem(withPattern(long)) ?? '';
  t.regex(problem, /^pattern ".{1,40}" is not supported \(no lookaround or backreferences\)/);
  t.true(problem.length < 200, problem);
  t.false(problem.includes('y'.repeat(40)));
  t.regex(compileProblem(withPattern('^(a)\\1$')) ?? '', /not supported/);
  t.regex(compileProblem({ type: 'object', patternProperties: { '(?!x)': {} } }) ?? '', /not supported/);
  t.is(compileProblem(withPattern('^[a-z]+$')), undefined);
});

test('a pattern too big for the shared engine is refused before it reaches it, and the engine keeps working', (t) => {
  const resets = schemaEngineStats().engineResets;
  // Nine characters that, compiled, need more than re2-wasm's whole 16 MiB heap.
  t.regex(compileProblem(withPattern('\\p{L}{100}')) ?? '', /more than the server allows for one pattern/);
  const many = { type: 'object', properties: Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`f${i}`, { type: 'string', pattern: `^\\p{L}+${i}$` }])) };
  t.regex(compileProblem(many) ?? '', /patterns together over what the server allows/);
  t.deepEqual(fields(fieldViolations(withPattern('^\\p{L}+$'), { code: '1' })), ['fields.code']);
  t.is(schemaEngineStats().engineResets, resets);
});

test('a string too long for the pattern that applies to it is refused, not matched', (t) => {
  const schema = withPattern('^a*$');
  t.deepEqual(fieldViolations(schema, { code: 'a'.repeat(MAX_MATCH_INPUT) }), []);
  const vs = fieldViolations(schema, { code: 'a'.repeat(MAX_MATCH_INPUT + 1) });
  t.deepEqual(fields(vs), ['fields']);
  t.regex(vs[0]!.description, new RegExp(`too long for the pattern .*at most ${MAX_MATCH_INPUT} characters`));
  t.deepEqual(fieldViolations(schema, { other: 'a'.repeat(MAX_MATCH_INPUT + 1) }), [], 'no pattern, no limit');
  // Where RE2's DFA gives up (a counted repetition after a loop), time is input × pattern size.
  const slow = withPattern('(?:a|b)*(?:a.{200}){3}c');
  t.deepEqual(fields(fieldViolations(slow, { code: 'ab'.repeat(2000) })), ['fields']);
});

test('the matches of one validation are bounded together', (t) => {
  const schema = { type: 'array', items: { type: 'string', pattern: '^(?:a|b)*(?:a.{20}){3}c$' } };
  const value = 'ab'.repeat(100);
  t.deepEqual(fieldViolations(schema, [value, value] as unknown as Record<string, unknown>).length, 2);
  const vs = fieldViolations(schema, Array.from({ length: 10_000 }, () => value) as unknown as Record<string, unknown>);
  t.deepEqual(vs, [{ field: 'fields', description: "are too many or too long for the schema's patterns to check in the time a request may take" }]);
});

test('an exhausted engine heap is replaced and the check answers as before', (t) => {
  t.deepEqual(fields(fieldViolations(withPattern('^a+$'), { code: 'b' })), ['fields.code']);
  const before = schemaEngineStats();
  // Fill the instance's fixed heap from outside, as RE2's lazily grown DFAs can from inside.
  const wasm = createRequire(import.meta.url)('re2-wasm/build/wasm/re2.js') as { _malloc(n: number): number };
  for (let size = 8 << 20; size >= 4096; ) {
    try {
      if (wasm._malloc(size)) continue;
    } catch {
      // emscripten aborts instead of returning 0: try smaller blocks.
    }
    size >>= 1;
  }
  t.deepEqual(fields(fieldViolations(withPattern('^b+$'), { code: 'a' })), ['fields.code']);
  t.deepEqual(fieldViolations(withPattern('^a+$'), { code: 'aa' }), []);
  const after = schemaEngineStats();
  t.is(after.engineResets, before.engineResets + 1);
  t.is(after.cachedValidators, 2, 'the validators of the old engine were dropped');
  t.is(after.livePatterns, 2);
});

test('compiled validators are bounded, their patterns freed, and Ajv keeps nothing per schema', (t) => {
  const before = schemaEngineStats();
  for (let i = 0; i < 1100; i++) {
    const schema = {
      type: 'object',
      $defs: { name: { $id: `https://example.com/n${i}`, type: 'string', pattern: `^n${i}[a-z]*$` } },
      properties: { name: { $ref: `https://example.com/n${i}` } },
    };
    t.deepEqual(fields(fieldViolations(schema, { name: `n${i}x` })), []);
  }
  const after = schemaEngineStats();
  t.is(after.compiles, before.compiles + 1100);
  t.true(after.cachedValidators <= 1000, `${after.cachedValidators} validators cached`);
  t.true(after.livePatterns <= after.cachedValidators, `${after.livePatterns} live patterns`);
  t.is(after.checkerEntries, before.checkerEntries, 'the shared meta-schema checkers grew');
  // Expensive patterns: the pattern budget, not the count, bounds them.
  for (let i = 0; i < 20; i++) compileProblem(withPattern(`^\\p{L}{4}${i}$`));
  const costly = schemaEngineStats();
  t.true(costly.cachedPatternCost <= 40_000, `${costly.cachedPatternCost}`);
});

test("one schema's nested $id does not clash with another's", (t) => {
  const shared = (type: string) => ({
    type: 'object',
    properties: { n: { $ref: 'https://example.com/shared' } },
    $defs: { s: { $id: 'https://example.com/shared', type } },
  });
  t.is(compileProblem(shared('string')), undefined);
  t.is(compileProblem(shared('integer')), undefined);
  t.deepEqual(fields(fieldViolations(shared('string'), { n: 1 })), ['fields.n']);
  t.deepEqual(fieldViolations(shared('integer'), { n: 1 }), []);
  t.deepEqual(fields(fieldViolations(shared('integer'), { n: 'x' })), ['fields.n']);
  // Another schema's $id is not there to resolve a $ref to.
  const dangling = { type: 'object', properties: { n: { $ref: 'https://example.com/shared' } }, $defs: { s: { type: 'integer' } } };
  t.regex(compileProblem(dangling) ?? '', /can't resolve reference/);
});

test('violations quote the schema and the data only briefly, and only so many', (t) => {
  const pattern = `^${'x'.repeat(500)}$`;
  const [v] = fieldViolations(withPattern(pattern), { code: 'y' });
  t.true(v!.description.length < 100, v!.description);
  const longKey = 'k'.repeat(5000);
  const [extra] = fieldViolations({ type: 'object', additionalProperties: false }, { [longKey]: 1 });
  t.true(extra!.field.length < 80, extra!.field);
  const dep = 'd'.repeat(3000);
  const [d] = fieldViolations({ type: 'object', dependentRequired: { a: [dep] } }, { a: 1 });
  t.true(d!.description.length <= 160 && d!.field.length < 80, JSON.stringify(d));
  const many = fieldViolations({ type: 'object', additionalProperties: false }, Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`p${i}`, i])));
  t.is(many.length, 21);
  t.deepEqual(many[20], { field: 'fields', description: 'and 480 more violations' });
});

test('required properties must be own properties: {} does not have "constructor"', (t) => {
  t.deepEqual(fields(fieldViolations({ type: 'object', required: ['constructor', '__proto__'] }, {})), ['fields.__proto__', 'fields.constructor']);
});

test('schemaProblem checks size, dialect and meta-schema without compiling or keeping anything', (t) => {
  const before = schemaEngineStats();
  t.regex(schemaProblem({ type: 'nope' }) ?? '', /^is not a valid JSON Schema: \/type must be/);
  t.regex(schemaProblem({ description: 'x'.repeat(70_000) }) ?? '', /bytes as JSON/);
  t.is(schemaProblem({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object' }), undefined);
  t.is(schemaProblem({ $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object' }), undefined);
  // A fragment of a meta-schema would be added to the shared checker's refs, one per spelling.
  for (let i = 0; i < 50; i++) {
    t.regex(schemaProblem({ $schema: `http://json-schema.org/draft-07/schema#/definitions/schema%41rray${'/'.repeat(i)}` }) ?? '', /^\$schema must be/);
  }
  const bad = { type: 'object', properties: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`${'p'.repeat(200)}${i}`, { type: 'nope' }])) };
  const many = schemaProblem(bad) ?? '';
  t.true(many.length < 400, many);
  t.regex(many, /\(and \d+ more\)$/);
  const after = schemaEngineStats();
  t.is(after.compiles, before.compiles);
  t.is(after.checkerEntries, before.checkerEntries);
});

test('a violation inside a list names the index in brackets, and user keys as they are spelled', (t) => {
  const schema = { type: 'object', properties: { myItems: { type: 'array', items: { type: 'object', properties: { n: { type: 'integer' } } } } } };
  t.deepEqual(
    fieldViolations(schema, { myItems: [{ n: 1 }, { n: 'x' }] }).map((v) => v.field),
    ['fields.myItems[1].n'],
  );
});
