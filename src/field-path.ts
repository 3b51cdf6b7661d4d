import { quote } from './errors.js';

/**
 * The one way a field is named in an error: its proto (snake_case) path with list indexes in brackets,
 * `messages[0].tool_calls[1].function_name` (AIP-193's BadRequest form), so a client in any language finds
 * the field it sent; a map entry is named by its quoted key, `mapping["draft"]` (see mapKey). Path segments
 * come from zod issues or from the domain's own walks over a request.
 */
export function fieldPath(segments: ReadonlyArray<PropertyKey>, prefix = ''): string {
  let out = prefix.replace(/\.$/, '');
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (typeof s === 'string' && s.startsWith('["')) out += s;
    else out += (out ? '.' : '') + snakeCase(String(s));
  }
  return out || '(request)';
}

/** The path segment naming a map entry by its key: quoted (and clipped), so no key reads as a field name. */
export const mapKey = (key: string): string => `[${quote(key, 40)}]`;

/** A generated (camelCase) field name in its proto spelling. */
export const snakeCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
