import {
  ROOT_CONTEXT,
  createTraceState,
  propagation,
  trace,
  type Context,
  type SpanContext,
  type TextMapGetter,
} from '@opentelemetry/api';
import type { Metadata } from '@grpc/grpc-js';

/**
 * W3C Trace Context (traceparent, tracestate) on incoming calls. A deployer who registers an OpenTelemetry
 * SDK usually registers its propagator too, and that one is asked first; without one, the API's propagator
 * is a no-op, so parley reads `traceparent` itself — that way the caller's trace id reaches the call's log
 * line (and a no-op tracer's span) whether or not an SDK is there.
 */

/** version 00: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case, nothing more. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const TRACEPARENT_LENGTH = 55;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
/** The W3C limit: at most 32 list members, and this many characters are enough to carry them. */
const MAX_TRACESTATE_CHARS = 512;

/**
 * The span context of a `traceparent` value, or undefined for anything that is not exactly a version-00
 * header with non-zero ids (a later version, upper case, extra fields, an all-zero id are all ignored, and
 * the call starts a trace of its own). `tracestate` rides along when the traceparent is valid and it is
 * short enough; the API's parser drops members it cannot read.
 */
export function parseTraceparent(traceparent: string, tracestate?: string): SpanContext | undefined {
  if (traceparent.length !== TRACEPARENT_LENGTH) return undefined;
  const m = TRACEPARENT.exec(traceparent);
  if (!m) return undefined;
  const [, traceId, spanId, flags] = m as unknown as [string, string, string, string];
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  const context: SpanContext = { traceId, spanId, traceFlags: parseInt(flags, 16) & 0xff, isRemote: true };
  if (tracestate !== undefined && tracestate.length > 0 && tracestate.length <= MAX_TRACESTATE_CHARS) context.traceState = createTraceState(tracestate);
  return context;
}

/** gRPC metadata as a propagator's carrier: every key once, string values only (binary ones are no headers). */
const metadataGetter: TextMapGetter<Metadata> = {
  keys: (md) => Object.keys(md.getMap()),
  get: (md, key) => {
    const values = md.get(key).filter((v): v is string => typeof v === 'string');
    return values.length === 0 ? undefined : values.length === 1 ? values[0] : values;
  },
};

/** The one value of a header, or undefined when it is absent or repeated (two traceparents: neither counts). */
function single(md: Metadata, key: string): string | undefined {
  const values = md.get(key);
  return values.length === 1 && typeof values[0] === 'string' ? values[0] : undefined;
}

/** Several tracestate headers are one list, joined by commas (W3C). */
function joined(md: Metadata, key: string): string | undefined {
  const values = md.get(key).filter((v): v is string => typeof v === 'string');
  return values.length ? values.join(',') : undefined;
}

/** The context a call's span starts in: the caller's trace, when its metadata carries one. */
export function incomingContext(md: Metadata): Context {
  const extracted = propagation.extract(ROOT_CONTEXT, md, metadataGetter);
  if (trace.getSpanContext(extracted)) return extracted;
  const traceparent = single(md, 'traceparent');
  const parent = traceparent === undefined ? undefined : parseTraceparent(traceparent, joined(md, 'tracestate'));
  return parent ? trace.setSpanContext(extracted, parent) : extracted;
}
