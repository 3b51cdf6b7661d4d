import test from 'ava';
import { Metadata } from '@grpc/grpc-js';
import { trace } from '@opentelemetry/api';
import { incomingContext, parseTraceparent } from '../../src/transport/trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${PARENT}-01`;

test('traceparent: a version-00 header gives the remote parent, its flags and its tracestate', (t) => {
  const sc = parseTraceparent(VALID, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
  t.like(sc, { traceId: TRACE, spanId: PARENT, traceFlags: 1, isRemote: true });
  t.is(sc!.traceState?.get('congo'), 't61rcWkgMzE');
  t.like(parseTraceparent(`00-${TRACE}-${PARENT}-00`), { traceFlags: 0 });
});

test('traceparent: anything but an exact, lower-case, non-zero version-00 header is ignored', (t) => {
  for (const bad of [
    '',
    VALID.toUpperCase(),
    `00-${TRACE.toUpperCase()}-${PARENT}-01`,
    `01-${TRACE}-${PARENT}-01`,
    `ff-${TRACE}-${PARENT}-01`,
    `00-${'0'.repeat(32)}-${PARENT}-01`,
    `00-${TRACE}-${'0'.repeat(16)}-01`,
    `00-${TRACE}-${PARENT}-01-extra`,
    `00-${TRACE}-${PARENT}-1`,
    `00-${TRACE}-${PARENT}-0g`,
    `00-${TRACE.slice(1)}x-${PARENT}-01`,
    ` ${VALID}`,
    `00_${TRACE}_${PARENT}_01`,
    `${VALID}${'0'.repeat(100_000)}`,
  ]) {
    t.is(parseTraceparent(bad), undefined, JSON.stringify(bad.slice(0, 80)));
  }
});

test('traceparent: a tracestate longer than the W3C limit is dropped, the parent kept', (t) => {
  const sc = parseTraceparent(VALID, `a=${'x'.repeat(600)}`);
  t.is(sc?.traceId, TRACE);
  t.is(sc?.traceState, undefined);
});

test('traceparent: a call metadata carrying one traceparent gives the context its span starts in; two give none', (t) => {
  const md = new Metadata();
  md.set('traceparent', VALID);
  md.set('tracestate', 'a=1');
  md.add('tracestate', 'b=2');
  const sc = trace.getSpanContext(incomingContext(md));
  t.like(sc, { traceId: TRACE, spanId: PARENT });
  t.is(sc?.traceState?.get('b'), '2');
  md.add('traceparent', `00-${'1'.repeat(32)}-${PARENT}-01`);
  t.is(trace.getSpanContext(incomingContext(md)), undefined);
  t.is(trace.getSpanContext(incomingContext(new Metadata())), undefined);
});
