/**
 * JSON Schema checks of a model type's developer fields (Ajv), with tenants kept apart:
 * - each schema compiles in an Ajv instance of its own, dropped afterwards: a shared instance keeps every
 *   schema it compiled (its cache, the `$id`s nested anywhere in them, the generated code's values) even
 *   after removeSchema, and one tenant's nested `$id` would resolve another tenant's `$ref`;
 * - patterns run on RE2 (see linear-regex.ts);
 * - compiled validators are cached per schema text (a registered version never changes, nor does its
 *   validator) in an LRU bounded by count, schema bytes and pattern cost;
 * - violations quote the schema or the data only briefly.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { FieldViolation } from '../errors.js';
import { clip, EngineExhausted, engineStats, MAX_MATCH_INPUT, MatchTooCostly, PatternProblem, PatternSet, resetEngine, withMatchBudget } from './linear-regex.js';
import { ownValue } from '../keys.js';
import { schemaSizeProblem } from './schema-limits.js';
import type { Ajv } from 'ajv';
import { WeightedLru } from './validator-cache.js';

// Ajv ships CommonJS with `exports.default`; createRequire sidesteps the ESM-interop default dance.
const require = createRequire(import.meta.url);
type AjvClass = typeof Ajv;
const Ajv2020 = require('ajv/dist/2020.js').default as AjvClass;
const Ajv07 = require('ajv').default as AjvClass;

/**
 * The estimated compiled size of all distinct patterns of one schema (units of linear-regex's
 * patternCost): about a third of a second of compiling on re2-wasm at worst.
 */
export const MAX_SCHEMA_PATTERN_COST = 12_000;
const CACHE_MAX_ENTRIES = 1000;
/** Schema text behind the cached validators; the generated code grows with it. */
const CACHE_MAX_SCHEMA_BYTES = 16 * 1024 * 1024;
/** Pattern cost behind the cached validators: their expressions share re2-wasm's fixed 16 MiB heap. */
const CACHE_MAX_PATTERN_COST = 40_000;
const MAX_VIOLATIONS = 20;
/** How much of anything a tenant wrote (schema or data) a message repeats. */
const QUOTE = 64;

// strict: false accepts keywords Ajv does not know (vendor annotations are common in hand-written schemas);
// logger: false because what a tenant's schema makes Ajv warn about is not the operator's business.
const options = { allErrors: true, strict: false, validateFormats: false, logger: false } as const;

/**
 * One instance per dialect that only ever checks schemas against its meta-schema, compiled once. Checking
 * adds nothing to it as long as `$schema` names the dialect itself (a fragment of it would be added to its
 * refs), hence DIALECTS.
 */
const checkers = { '2020-12': new Ajv2020(options), '07': new Ajv07(options) };
// Each compiles its meta-schema on first use; do it now, so that what they hold stays constant from here on.
// validateSchema answers synchronously here: a meta-schema without $async returns a boolean.
for (const checker of Object.values(checkers)) void checker.validateSchema({});
const DIALECTS = new Map<string, keyof typeof checkers>([
  ['https://json-schema.org/draft/2020-12/schema', '2020-12'],
  ['https://json-schema.org/draft/2020-12/schema#', '2020-12'],
  ['http://json-schema.org/draft-07/schema', '07'],
  ['http://json-schema.org/draft-07/schema#', '07'],
]);

interface Compiled {
  validate: ValidateFunction;
  patterns: PatternSet;
}

const cache = new WeightedLru<Compiled>(CACHE_MAX_ENTRIES, [CACHE_MAX_SCHEMA_BYTES, CACHE_MAX_PATTERN_COST], (c) => c.patterns.free());
let compiles = 0;

function dialectOf(schema: Record<string, unknown>): keyof typeof checkers | string {
  const declared = schema.$schema;
  if (declared === undefined) return '2020-12';
  const known = typeof declared === 'string' ? DIALECTS.get(declared) : undefined;
  return known ?? `$schema must be ${[...DIALECTS.keys()].filter((d) => !d.endsWith('#')).join(' or ')} (or left out)`;
}

/**
 * Problems found without compiling `schema`: its size and depth, its dialect and its meta-schema. Cheap
 * and holding nothing afterwards, so it can run before deciding whether the schema will be stored.
 */
export function schemaProblem(schema: Record<string, unknown>): string | undefined {
  const size = schemaSizeProblem(schema);
  if (size) return size;
  const dialect = dialectOf(schema);
  if (dialect !== '2020-12' && dialect !== '07') return dialect;
  const checker = checkers[dialect];
  try {
    if (checker.validateSchema(schema)) return undefined;
  } catch (err) {
    return clip(err instanceof Error ? err.message : String(err), 160);
  }
  return `is not a valid JSON Schema: ${summarize(checker.errors ?? [])}`;
}

/** Compiles (or finds compiled) a schema about to be stored; a description of why it cannot be used, or undefined. */
export function compileProblem(schema: Record<string, unknown>): string | undefined {
  return withEngine(
    () => {
      const v = validatorFor(schema);
      return typeof v === 'string' ? v : undefined;
    },
    () => "its patterns need more memory than the server allows",
  );
}

/** Violations of `fields` against `schema`, each named `fields.<path>` as a client would address it. */
export function fieldViolations(schema: Record<string, unknown> | undefined, fields: Record<string, unknown>): FieldViolation[] {
  if (!schema) return [];
  return withEngine(
    () => check(schema, fields),
    () => [{ field: 'fields', description: "could not be checked: the model type's patterns need more memory than the server allows" }],
  );
}

/** What the process holds for schemas, for tests and diagnostics. */
export function schemaEngineStats() {
  return {
    /** Ajv compilations started since the process started. */
    compiles,
    cachedValidators: cache.size,
    cachedSchemaBytes: cache.total(0),
    cachedPatternCost: cache.total(1),
    /** Entries held by the shared meta-schema checkers; constant unless something leaks into them. */
    checkerEntries: Object.values(checkers).reduce((n, a) => n + ajvEntries(a), 0),
    ...engineStats(),
  };
}

function ajvEntries(ajv: InstanceType<AjvClass>): number {
  // Ajv's internals: its schema cache and the values its generated code refers to.
  const internals = ajv as unknown as { _cache: Map<unknown, unknown>; scope: { _values: Record<string, Map<unknown, unknown>> } };
  const scoped = Object.values(internals.scope._values).reduce((n, m) => n + m.size, 0);
  return Object.keys(ajv.refs).length + Object.keys(ajv.schemas).length + internals._cache.size + scoped;
}

/**
 * Runs `work`; if re2-wasm's heap is exhausted, replaces the engine (every cached validator goes with it)
 * and runs it once more, then gives up with `exhausted()`.
 */
function withEngine<T>(work: () => T, exhausted: () => T): T {
  for (let attempt = 0; ; attempt++) {
    try {
      return work();
    } catch (err) {
      if (!(err instanceof EngineExhausted)) throw err;
      resetEngine();
      cache.clear();
      if (attempt > 0) return exhausted();
    }
  }
}

function check(schema: Record<string, unknown>, fields: Record<string, unknown>): FieldViolation[] {
  const v = validatorFor(schema);
  if (typeof v === 'string') return [{ field: 'fields', description: `the model type's schema does not compile: ${v}` }];
  try {
    if (withMatchBudget(() => v(fields))) return [];
  } catch (err) {
    if (!(err instanceof MatchTooCostly)) throw err;
    const description =
      err.scope === 'string'
        ? `has a string too long for the pattern the schema applies to it (at most ${MAX_MATCH_INPUT} characters, fewer for a large pattern)`
        : "are too many or too long for the schema's patterns to check in the time a request may take";
    return [{ field: 'fields', description }];
  }
  const errors = v.errors ?? [];
  const shown = errors.slice(0, MAX_VIOLATIONS).map((e) => toViolation(e, fields));
  if (errors.length > MAX_VIOLATIONS) shown.push({ field: 'fields', description: `and ${errors.length - MAX_VIOLATIONS} more violations` });
  return shown;
}

function validatorFor(schema: Record<string, unknown>): ValidateFunction | string {
  const text = JSON.stringify(schema);
  const key = createHash('sha256').update(text).digest('base64url');
  const hit = cache.get(key);
  if (hit) return hit.validate;
  const compiled = compile(schema);
  if (typeof compiled === 'string') return compiled;
  cache.set(key, compiled, [Buffer.byteLength(text), compiled.patterns.cost]);
  return compiled.validate;
}

function compile(schema: Record<string, unknown>): Compiled | string {
  compiles++;
  const patterns = new PatternSet(MAX_SCHEMA_PATTERN_COST);
  const Engine = dialectOf(schema) === '07' ? Ajv07 : Ajv2020;
  try {
    // The meta-schema check is schemaProblem's, on the shared checker: here it would compile the
    // meta-schema afresh for every schema. ownProperties: `required: ["constructor"]` is not met by {}.
    const ajv = new Engine({ ...options, validateSchema: false, ownProperties: true, code: { regExp: patterns.engine } });
    // Without its own $id, as schemas always were compiled, so that every stored schema still compiles:
    // a top-level $id naming a meta-schema, or a URN Ajv cannot serialize, would not.
    const { $id: _ownId, ...anonymous } = schema;
    return { validate: ajv.compile(anonymous), patterns };
  } catch (err) {
    // An exhausted engine is discarded whole; touching its objects again could abort once more.
    if (err instanceof EngineExhausted) throw err;
    patterns.free();
    if (err instanceof PatternProblem) return `pattern ${JSON.stringify(clip(err.pattern, 32))} ${err.message}`;
    return clip(err instanceof Error ? err.message : String(err), 160);
  }
}

function summarize(errors: ErrorObject[]): string {
  const shown = errors.slice(0, 3).map((e) => clip(`${e.instancePath || '/'} ${e.message ?? e.keyword}`, 100));
  return shown.join('; ') + (errors.length > 3 ? ` (and ${errors.length - 3} more)` : '');
}

/**
 * The violated field's path: `fields` then the user's keys as they are spelled (they are no proto names),
 * list indexes in brackets as field-path.ts writes them (`fields.items[0].name`).
 */
function toViolation(e: ErrorObject, data: unknown): FieldViolation {
  const segments = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'required' && typeof params.missingProperty === 'string') segments.push(params.missingProperty);
  if (e.keyword === 'additionalProperties' && typeof params.additionalProperty === 'string') segments.push(params.additionalProperty);
  // Errors under propertyNames are about a key, not its value.
  const key = e.propertyName ?? params.propertyName;
  if (typeof key === 'string') segments.push(key);
  let field = 'fields';
  let at: unknown = data;
  for (const s of segments) {
    field += Array.isArray(at) ? `[${s}]` : `.${clip(s, QUOTE)}`;
    at = typeof at === 'object' && at !== null ? ownValue(at, s) : undefined;
  }
  return { field, description: describe(e) };
}

/** Ajv's message with anything it quotes from the schema clipped (a pattern can be a thousand characters). */
function describe(e: ErrorObject): string {
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'pattern') return `must match the pattern ${JSON.stringify(clip(String(params.pattern), QUOTE))}`;
  const message = (e.message ?? `fails ${e.keyword}`).replace(/(["'])([^"']{65,})\1/g, (_m, q: string, s: string) => `${q}${clip(s, QUOTE)}${q}`);
  return clip(message, 160);
}
