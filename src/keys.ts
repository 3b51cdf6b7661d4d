/**
 * User-supplied keys (Struct and map keys, field-mask segments, state names) meet plain objects in a few
 * places. These helpers are the only way such a key reads or writes one: lookups see own properties only
 * (so `constructor` or `toString` never resolve to Object.prototype's), writes define own properties (so no
 * setter on the chain runs), and `__proto__` — the one key JavaScript objects cannot hold as plain data
 * across JSON parsers, validators and decoders — is refused at the edge instead.
 */

export const isReservedKey = (key: string): boolean => key === '__proto__';

/** `obj[key]` if `obj` has it as an own property, else undefined. */
export function ownValue(obj: object, key: string): unknown {
  return Object.hasOwn(obj, key) ? (obj as Record<string, unknown>)[key] : undefined;
}

/** Defines `obj[key] = value` as an own, enumerable data property, whatever the prototype chain holds. */
export function setOwn(obj: object, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}
