import { invalidArgument } from './errors.js';
import { LABEL_KEY } from './labels.js';

/**
 * The AIP-160 subset the list RPCs take: restrictions joined by AND, each of which one index serves. The
 * parser is linear and bounded (MAX_FILTER_CHARS, MAX_RESTRICTIONS); everything outside the subset is
 * refused by name with INVALID_ARGUMENT on `filter` (never a query that would scan), and an error quotes
 * at most a short token of the input.
 */

export const MAX_FILTER_CHARS = 2048;
export const MAX_RESTRICTIONS = 16;

export type TimeOp = '=' | '<' | '<=' | '>' | '>=';
export type EqualityField = 'state' | 'model_type' | 'end_user_id' | 'llm_client_id';
export type TimeField = 'create_time' | 'update_time';

export type Restriction =
  | { kind: 'label'; key: string; value: string }
  | { kind: 'has_label'; key: string }
  | { kind: 'equals'; field: EqualityField; value: string }
  // `at` is the literal truncated to the millisecond; `subMs` when the literal had more (non-zero) digits.
  | { kind: 'time'; field: TimeField; op: TimeOp; at: Date; subMs?: true };

export interface FilterSpec {
  /** The equality fields this list takes (the rest are refused as not applicable to it). */
  equality: readonly EqualityField[];
}

const EQUALITY_FIELDS: readonly EqualityField[] = ['state', 'model_type', 'end_user_id', 'llm_client_id'];
const TIME_FIELDS: readonly TimeField[] = ['create_time', 'update_time'];
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$/;
/** Longest value a literal may hold (a label value is at most 256 characters, an id at most 128). */
const MAX_LITERAL_CHARS = 256;

type Token =
  | { t: 'ident'; v: string }
  | { t: 'string'; v: string }
  | { t: 'op'; v: string }
  | { t: 'punct'; v: string };

const refuse = (why: string) => invalidArgument('filter', why);
/** A token as an error may show it: short ones only. */
const shown = (s: string) => (s.length <= 40 ? JSON.stringify(s) : `a ${s.length}-character token`);

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[A-Za-z0-9_-]/.test(src[j]!)) j++;
      out.push({ t: 'ident', v: src.slice(i, j) });
      i = j;
    } else if (c === '"') {
      let v = '';
      let j = i + 1;
      for (;;) {
        if (j >= src.length) throw refuse('has a string literal without its closing "');
        const d = src[j]!;
        if (d === '"') break;
        if (d === '\\') {
          const e = src[j + 1];
          if (e !== '"' && e !== '\\') throw refuse('has an escape other than \\" or \\\\ in a string literal');
          v += e;
          j += 2;
        } else {
          v += d;
          j++;
        }
      }
      if (v.length > MAX_LITERAL_CHARS) throw refuse(`has a string literal of ${v.length} characters; at most ${MAX_LITERAL_CHARS} are allowed`);
      out.push({ t: 'string', v });
      i = j + 1;
    } else if (c === '<' || c === '>' || c === '!' || c === '=') {
      const two = src.slice(i, i + 2);
      const op = two === '<=' || two === '>=' || two === '!=' ? two : c;
      out.push({ t: 'op', v: op });
      i += op.length;
    } else if (c === ':' || c === '.' || c === '*' || c === '(' || c === ')' || c === '-' || c === ',') {
      out.push({ t: 'punct', v: c });
      i++;
    } else {
      throw refuse(`has a character ${c.codePointAt(0)! < 0x20 || c.codePointAt(0)! > 0x7e ? `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}` : JSON.stringify(c)} the grammar does not use`);
    }
  }
  return out;
}

/** Parses `filter` for a list described by `spec`; an empty filter is no restriction. */
export function parseFilter(filter: string, spec: FilterSpec): Restriction[] {
  if (filter.length > MAX_FILTER_CHARS) throw refuse(`is ${filter.length} characters; at most ${MAX_FILTER_CHARS} are allowed`);
  const tokens = tokenize(filter);
  const out: Restriction[] = [];
  let i = 0;
  const next = () => tokens[i++];
  while (i < tokens.length) {
    if (out.length > 0) {
      const and = next()!;
      if (and.t === 'ident' && and.v === 'OR') throw refuse('uses OR: only restrictions joined by AND are supported, each served by an index');
      if (!(and.t === 'ident' && and.v === 'AND')) throw refuse(`has ${shown(and.v)} where AND was expected: restrictions are joined by AND`);
      if (i >= tokens.length) throw refuse('ends with AND');
    }
    if (out.length === MAX_RESTRICTIONS) throw refuse(`has more than ${MAX_RESTRICTIONS} restrictions`);
    out.push(restriction());
  }
  return out;

  function restriction(): Restriction {
    const head = next()!;
    if (head.t === 'ident' && head.v === 'NOT') throw refuse('uses NOT: negation is not supported (no index serves it)');
    if (head.t === 'punct' && head.v === '-') throw refuse('uses - (negation): negation is not supported (no index serves it)');
    if (head.t === 'punct' && head.v === '(') throw refuse('uses parentheses: only restrictions joined by AND are supported');
    if (head.t !== 'ident') throw refuse(`has ${shown(head.v)} where a field name was expected`);
    if (head.v === 'AND' || head.v === 'OR') throw refuse(`has ${head.v} where a restriction was expected`);
    if (tokens[i]?.t === 'punct' && tokens[i]!.v === '(') throw refuse(`calls a function (${shown(head.v)}): functions are not supported`);
    if (head.v === 'labels') return label();
    const dotted = tokens[i]?.t === 'punct' && tokens[i]!.v === '.';
    if (dotted) throw refuse(`names a nested field of ${shown(head.v)}: only labels.<key> is filterable (no index serves the others)`);
    if ((TIME_FIELDS as readonly string[]).includes(head.v)) return time(head.v as TimeField);
    if ((EQUALITY_FIELDS as readonly string[]).includes(head.v)) {
      const field = head.v as EqualityField;
      if (!spec.equality.includes(field)) throw refuse(`names ${field}, which this list does not filter by`);
      operator(['=']);
      const value = literal();
      // Empty is the field unset: rows without an end user are not in its (partial) index, and no state,
      // model type or LLM client is empty. Refused rather than read as no restriction.
      if (value === '') throw refuse(`compares ${field} with "": the field is unset there, which no index serves`);
      return { kind: 'equals', field, value };
    }
    throw refuse(`names ${shown(head.v)}, which is not filterable: fields are labels.<key>, ${[...spec.equality, ...TIME_FIELDS].join(', ')} (each served by an index)`);
  }

  function label(): Restriction {
    const dot = next();
    if (!(dot?.t === 'punct' && dot.v === '.')) throw refuse('names labels without a key: write labels.<key>');
    const key = next();
    if (key?.t !== 'ident' || !LABEL_KEY.test(key.v)) throw refuse('names a label key that is not 1–63 lower-case letters, digits, _ or -, starting with a letter');
    if (tokens[i]?.t === 'punct' && tokens[i]!.v === '.') throw refuse('names a field inside a label: labels are flat');
    const op = next();
    if (op?.t === 'punct' && op.v === ':') {
      const star = next();
      if (!(star?.t === 'punct' && star.v === '*')) throw refuse(`uses labels.${key.v}: with something other than *: only labels.<key>:* (has the label) is supported`);
      return { kind: 'has_label', key: key.v };
    }
    i--;
    operator(['=']);
    return { kind: 'label', key: key.v, value: literal() };
  }

  function time(field: TimeField): Restriction {
    const op = operator(['=', '<', '<=', '>', '>=']) as TimeOp;
    const parsed = rfc3339(literal());
    if (!parsed) throw refuse(`compares ${field} with a value that is not an RFC 3339 time such as "2025-01-31T12:00:00Z"`);
    return { kind: 'time', field, op, at: parsed.at, ...(parsed.subMs ? { subMs: true as const } : {}) };
  }

  function operator(allowed: readonly string[]): string {
    const op = next();
    if (op?.t === 'op' && op.v === '!=') throw refuse('uses !=: negation is not supported (no index serves it)');
    if ((op?.t === 'op' || op?.t === 'punct') && allowed.includes(op.v)) return op.v;
    if (op?.t === 'punct' && op.v === ':') throw refuse('uses : (has) on a field other than labels.<key>');
    throw refuse(`has ${op ? shown(op.v) : 'nothing'} where an operator (${allowed.join(' ')}) was expected`);
  }

  function literal(): string {
    const v = next();
    if (v?.t !== 'string') throw refuse(`has ${v ? shown(v.v) : 'nothing'} where a double-quoted string was expected`);
    return v.v;
  }
}

/** The orders a list takes: `<time>` or `<time> desc`. */
export interface Order {
  field: TimeField;
  desc: boolean;
}

export function parseOrderBy(orderBy: string): Order | undefined {
  const words = orderBy.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return undefined;
  const [field, dir, ...rest] = words;
  if (rest.length === 0 && (field === 'create_time' || field === 'update_time') && (dir === undefined || dir === 'desc' || dir === 'asc')) {
    return { field, desc: dir === 'desc' };
  }
  throw invalidArgument('order_by', 'must be create_time, create_time desc, update_time or update_time desc');
}

/**
 * An RFC 3339 date-time checked field by field (a calendar day that exists, hours 0–23, no leap second,
 * an offset of at most 23:59), years 0001–9999 in UTC; the regular expression only checks its shape (no
 * nested quantifier: linear on any input). `subMs` when digits past the millisecond are not all zero.
 */
function rfc3339(text: string): { at: Date; subMs: boolean } | undefined {
  if (!RFC3339.test(text)) return undefined;
  const n = (from: number, to: number) => Number(text.slice(from, to));
  const [year, month, day, hour, minute, second] = [n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19)];
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !(year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)) ? 1 : 0);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return undefined;
  let i = 19;
  let fraction = '';
  if (text[i] === '.') {
    let j = i + 1;
    while (j < text.length && text[j]! >= '0' && text[j]! <= '9') j++;
    fraction = text.slice(i + 1, j);
    i = j;
  }
  let offsetMinutes = 0;
  if (text[i] === '+' || text[i] === '-') {
    const [oh, om] = [n(i + 1, i + 3), n(i + 4, i + 6)];
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (text[i] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const at = new Date(0);
  // setUTCFullYear, unlike Date.UTC, takes years below 100 as they are.
  at.setUTCFullYear(year, month - 1, day);
  at.setUTCHours(hour, minute, second, Number(fraction.slice(0, 3).padEnd(3, '0')));
  at.setTime(at.getTime() - offsetMinutes * 60_000);
  if (at.getUTCFullYear() < 1 || at.getUTCFullYear() > 9999) return undefined;
  return { at, subMs: /[1-9]/.test(fraction.slice(3)) };
}

/**
 * A time restriction as index-served bounds (`<` and `>=` only) on a column compared at the millisecond,
 * the precision the API returns times in. Prompts store microseconds: without this, a prompt whose
 * create_time reads T would fail `create_time <= T` and `create_time = T` (its stored time is T plus some
 * microseconds). A stored time s matches exactly when its millisecond floor matches the literal.
 */
export function millisecondBounds(r: { op: TimeOp; at: Date; subMs?: true }): Array<{ op: '<' | '>='; at: Date }> {
  const at = r.at;
  const next = new Date(at.getTime() + 1);
  switch (r.op) {
    case '<':
      return [{ op: '<', at: r.subMs ? next : at }];
    case '<=':
      return [{ op: '<', at: next }];
    case '>':
      return [{ op: '>=', at: next }];
    case '>=':
      return [{ op: '>=', at: r.subMs ? next : at }];
    case '=':
      // A literal finer than a millisecond equals no time the API shows: an empty range.
      return r.subMs ? [{ op: '>=', at: next }, { op: '<', at: next }] : [{ op: '>=', at }, { op: '<', at: next }];
  }
}
