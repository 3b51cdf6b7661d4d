/**
 * Dialogue rendering for Genie models.
 *
 * Pure module: no I/O, no clock, no randomness. Behaviour follows the genie-flow
 * reference (genie_flow/model/dialogue.py, DialogueFormat.format), except where noted: JSON and the
 * empty dialogue. The reference's QUESTION_ANSWER was never implemented there and is not offered here.
 */

export const ACTORS = ['system', 'assistant', 'user'] as const;
export type Actor = (typeof ACTORS)[number];

export interface DialogueElement {
  actor: Actor;
  actorText: string;
  timestamp: Date;
}

export type DialogueFormatName = 'PYTHON_REPR' | 'JSON' | 'YAML' | 'CHAT';

export const DIALOGUE_FORMAT_NAMES: readonly DialogueFormatName[] = ['PYTHON_REPR', 'JSON', 'YAML', 'CHAT'];

/**
 * Exact, case-sensitive match against the three utterance actors; anything else
 * (including 'USER', 'LLM', ' user') is invalid and yields undefined.
 */
export function parseActor(value: string): Actor | undefined {
  return (ACTORS as readonly string[]).includes(value) ? (value as Actor) : undefined;
}

export function isDialogueFormatName(value: string): value is DialogueFormatName {
  return (DIALOGUE_FORMAT_NAMES as readonly string[]).includes(value);
}

/**
 * Render a dialogue. Every format renders an empty dialogue as "".
 * Throws TypeError for an element whose actor/actorText/timestamp is invalid
 * (callers may feed data that bypassed the type system).
 */
export function formatDialogue(dialogue: readonly DialogueElement[], format: DialogueFormatName): string {
  if (!isDialogueFormatName(format)) {
    throw new TypeError(`unknown dialogue format: ${JSON.stringify(format)}`);
  }
  return joinEntries(
    dialogue.map((e, i) => {
      assertElement(e, i);
      return ENTRY[format](e);
    }),
    format,
  );
}

/**
 * Every format renders a dialogue as its elements' entries between an opening and a closing string, joined
 * by a separator: `formatDialogue(d, f)` is `joinEntries(d.map((e) => formatEntry(e, f)), f)`. A rendering
 * within a token budget counts entries apart to choose which elements fit, then counts the whole.
 */
export function formatEntry(e: DialogueElement, format: DialogueFormatName): string {
  assertElement(e, 0);
  return ENTRY[format](e);
}

/** The strings around and between entries: an empty dialogue is "" in every format (no brackets). */
export const FRAMES: Readonly<Record<DialogueFormatName, { open: string; separator: string; close: string }>> = {
  CHAT: { open: '', separator: '\n', close: '' },
  YAML: { open: '', separator: '\n', close: '' },
  // JSON.stringify of an array: its items' JSON joined by ",", without spaces.
  JSON: { open: '[', separator: ',', close: ']' },
  PYTHON_REPR: { open: '[', separator: ', ', close: ']' },
};

export function joinEntries(entries: readonly string[], format: DialogueFormatName): string {
  if (entries.length === 0) return '';
  const f = FRAMES[format];
  return f.open + entries.join(f.separator) + f.close;
}

const ENTRY: Readonly<Record<DialogueFormatName, (e: DialogueElement) => string>> = {
  CHAT: (e) => chatEntry(e),
  YAML: (e) => yamlEntry(e),
  JSON: (e) => JSON.stringify({ actor: e.actor, timestamp: rfc3339Utc(e.timestamp), actor_text: e.actorText }),
  PYTHON_REPR: (e) => pythonReprEntry(e),
};

function assertElement(e: DialogueElement, index: number): void {
  if (e === null || typeof e !== 'object') {
    throw new TypeError(`dialogue[${index}] is not an object`);
  }
  if (typeof e.actor !== 'string' || parseActor(e.actor) === undefined) {
    throw new TypeError(`dialogue[${index}]: unknown actor: ${JSON.stringify(e.actor)}`);
  }
  if (typeof e.actorText !== 'string') {
    throw new TypeError(`dialogue[${index}]: actorText must be a string`);
  }
  if (!(e.timestamp instanceof Date) || Number.isNaN(e.timestamp.getTime())) {
    throw new TypeError(`dialogue[${index}]: timestamp must be a valid Date`);
  }
}

// ---------------------------------------------------------------------------
// CHAT: "[ACTOR]: text\n" per element, elements joined by "\n".

function chatEntry(e: DialogueElement): string {
  return `[${e.actor.toUpperCase()}]: ${e.actorText}\n`;
}

// ---------------------------------------------------------------------------
// YAML: hand-rolled, no quoting or escaping. Per element:
//   "- role: <actor>\n  content: >\n" + lines + "\n"
// where lines = each Python-splitlines() line prefixed by 4 spaces, joined by "\n".
// Elements joined by "\n".

function yamlEntry(e: DialogueElement): string {
  const lines = pythonSplitlines(e.actorText)
    .map((line) => `    ${line}`)
    .join('\n');
  return `- role: ${e.actor}\n  content: >\n${lines}\n`;
}

/**
 * Python str.splitlines() without keepends: splits on \n, \r, \r\n, \v, \f,
 * \x1c, \x1d, \x1e, \x85, \u2028, \u2029; a trailing line break does not
 * produce a trailing empty line; "" gives [].
 */
export function pythonSplitlines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (isPythonLineBreak(c)) {
      out.push(text.slice(start, i));
      i += c === 0x0d && text.charCodeAt(i + 1) === 0x0a ? 2 : 1;
      start = i;
    } else {
      i += 1;
    }
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

function isPythonLineBreak(c: number): boolean {
  return (
    c === 0x0a ||
    c === 0x0d ||
    c === 0x0b ||
    c === 0x0c ||
    c === 0x1c ||
    c === 0x1d ||
    c === 0x1e ||
    c === 0x85 ||
    c === 0x2028 ||
    c === 0x2029
  );
}

// ---------------------------------------------------------------------------
// JSON: RFC 3339 UTC timestamps, millisecond precision, "Z" suffix.

function rfc3339Utc(d: Date): string {
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) {
    throw new RangeError(`timestamp year ${year} cannot be expressed in RFC 3339`);
  }
  return d.toISOString();
}

// ---------------------------------------------------------------------------
// PYTHON_REPR: what Python's repr() gives for a list of pydantic models
//   DialogueElement(actor='user', timestamp=datetime.datetime(...), actor_text='...')
// with a timezone-aware UTC timestamp (tzinfo=datetime.timezone.utc).

function pythonReprEntry(e: DialogueElement): string {
  return (
    `DialogueElement(actor=${pythonStrRepr(e.actor)}, ` +
    `timestamp=${pythonDatetimeRepr(e.timestamp)}, ` +
    `actor_text=${pythonStrRepr(e.actorText)})`
  );
}

function pythonDatetimeRepr(d: Date): string {
  const parts = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes()];
  const seconds = d.getUTCSeconds();
  const micros = d.getUTCMilliseconds() * 1000;
  if (micros !== 0) parts.push(seconds, micros);
  else if (seconds !== 0) parts.push(seconds);
  return `datetime.datetime(${parts.join(', ')}, tzinfo=datetime.timezone.utc)`;
}

const NON_PRINTABLE = /^[\p{C}\p{Z}]$/u;

/** Python 3 repr() of a str (quote choice and escaping as in CPython's unicode_repr). */
export function pythonStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0) as number;
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex(cp, 2)}`;
    else if (cp < 0x7f) out += ch;
    else if (!NON_PRINTABLE.test(ch)) out += ch;
    else if (cp <= 0xff) out += `\\x${hex(cp, 2)}`;
    else if (cp <= 0xffff) out += `\\u${hex(cp, 4)}`;
    else out += `\\U${hex(cp, 8)}`;
  }
  return out + quote;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}
