/**
 * Labels: a developer's short string tags on a session (and, in the storage, a prompt), kept as jsonb and
 * found through a GIN index. A key is a plain identifier, so the filter grammar names it as `labels.<key>`
 * without quoting; values are short printable text. Labels live in null-prototype objects: a key such as
 * `constructor` is data, never a property of Object.prototype.
 */

export type Labels = Record<string, string>;

export const MAX_LABELS = 64;
export const MAX_LABEL_VALUE_CHARS = 256;
export const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
// Unicode Cc: C0 and C1 controls and DEL.
const CONTROL = /\p{Cc}/u;

export const noLabels = (): Labels => Object.create(null) as Labels;

/** A null-prototype copy of `entries` (already checked). */
export function labelsOf(entries: Iterable<readonly [string, string]>): Labels {
  const out = noLabels();
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, writable: true, enumerable: true, configurable: true });
  return out;
}

/** Why `labels` are refused (a short description that never repeats a key or value at length), or undefined. */
export function labelsProblem(labels: ReadonlyArray<readonly [unknown, unknown]>): string | undefined {
  if (labels.length > MAX_LABELS) return `has ${labels.length} labels; at most ${MAX_LABELS} are allowed`;
  for (const [k, v] of labels) {
    if (typeof k !== 'string' || !LABEL_KEY.test(k)) {
      const shown = typeof k === 'string' && k.length <= 63 && !CONTROL.test(k) ? ` ${JSON.stringify(k)}` : '';
      return `has a key${shown} that is not 1–63 lower-case letters, digits, _ or -, starting with a letter`;
    }
    if (typeof v !== 'string') return `label ${k} has a value that is not a string`;
    if (v.length > MAX_LABEL_VALUE_CHARS) return `label ${k} has a value of ${v.length} characters; at most ${MAX_LABEL_VALUE_CHARS} are allowed`;
    if (CONTROL.test(v) || !v.isWellFormed()) return `label ${k} has a value with a control character or a lone surrogate`;
  }
  return undefined;
}

/** Whether two label maps hold the same entries. */
export function sameLabels(a: Labels, b: Labels): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && b[k] === a[k]);
}

/**
 * The entries of `labels` sorted by key: how a request fingerprint holds them, since a map's entries arrive
 * in whatever order the client's encoder wrote them (Go's are random) and a retry must match its first try.
 */
export const labelEntries = (labels: Labels): Array<[string, string]> => Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
