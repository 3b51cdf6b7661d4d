/**
 * JSON Schema checks of a model type's developer fields (Ajv). Compiled validators are cached per schema
 * text: a registered version never changes, so neither does its validator.
 */
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { FieldViolation } from '../errors.js';

// Ajv ships CommonJS with `exports.default`; createRequire sidesteps the ESM-interop default dance.
const require = createRequire(import.meta.url);
const Ajv2020 = require('ajv/dist/2020.js').default as typeof import('ajv').default;
const Ajv07 = require('ajv').default as typeof import('ajv').default;

// strict: false accepts keywords Ajv does not know (vendor annotations are common in hand-written schemas);
// the schema is still checked against its meta-schema, so `{"type": "nope"}` is rejected.
const options = { allErrors: true, strict: false, validateFormats: false };
const ajv2020 = new Ajv2020(options);
const ajv07 = new Ajv07(options);

const cache = new Map<string, ValidateFunction>();
const CACHE_LIMIT = 1000;

function engineFor(schema: Record<string, unknown>) {
  const dialect = typeof schema.$schema === 'string' ? schema.$schema : '';
  return /draft-0[67]/.test(dialect) ? ajv07 : ajv2020;
}

/** Compiles a schema; returns a description of the problem instead when it is not a valid JSON Schema. */
export function compileSchema(schema: Record<string, unknown>): ValidateFunction | string {
  const text = JSON.stringify(schema);
  const hit = cache.get(text);
  if (hit) return hit;
  let fn: ValidateFunction;
  try {
    // Schemas may carry $id; compiling without adding them keeps two types with the same $id apart.
    const engine = engineFor(schema);
    const { $id: _ignored, ...anonymous } = schema;
    fn = engine.compile(anonymous);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  cache.set(text, fn);
  return fn;
}

/** Violations of `fields` against `schema`, each named `fields.<path>` as a client would address it. */
export function fieldViolations(schema: Record<string, unknown> | undefined, fields: Record<string, unknown>): FieldViolation[] {
  if (!schema) return [];
  const fn = compileSchema(schema);
  if (typeof fn === 'string') return [{ field: 'fields', description: `the model type's schema does not compile: ${fn}` }];
  if (fn(fields)) return [];
  return (fn.errors ?? []).map(toViolation);
}

function toViolation(e: ErrorObject): FieldViolation {
  const segments = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'required' && typeof params.missingProperty === 'string') segments.push(params.missingProperty);
  if (e.keyword === 'additionalProperties' && typeof params.additionalProperty === 'string') segments.push(params.additionalProperty);
  const field = ['fields', ...segments].join('.');
  return { field, description: e.message ?? `fails ${e.keyword}` };
}
