/**
 * Process-wide hardening against prototype pollution, applied once by the composition root before any
 * request is decoded.
 *
 * Decoders assign user-supplied keys to plain objects (protobuf map and Struct keys, JSON fields). With the
 * legacy `Object.prototype.__proto__` accessor in place, a key named `__proto__` replaces the receiving
 * object's prototype instead of becoming data, and silently vanishes from `Object.keys`. Removing the
 * accessor (what `node --disable-proto=delete` does) makes such a key an ordinary own property everywhere,
 * so request checks can see it and refuse it. `Object.getPrototypeOf`/`setPrototypeOf` and the
 * `{ __proto__: x }` literal syntax are unaffected.
 */
const proto = Object.prototype as { __proto__?: unknown };
if (Object.getOwnPropertyDescriptor(proto, '__proto__')) delete proto.__proto__;

// Freezing Object.prototype would be stronger still, but then assigning an own `toString` or `constructor`
// to any plain object throws (the "override mistake"), which dependencies do; a test asserts instead that
// no request can modify it.
export {};
