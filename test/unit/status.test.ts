import test from 'ava';
import { status } from '@grpc/grpc-js';
import { AppError, invalidArgument, notFound, resourceExhausted } from '../../src/errors.js';
import { clip, clipBytes } from '../../src/errors.js';
import { CallCancelled, DeadlineExceeded, statusCodeOf, toServiceError } from '../../src/transport/status.js';
import { errorInfo, retryDelayMs, violatedFields } from '../helpers/harness.js';

const detailsBytes = (err: ReturnType<typeof toServiceError>) => (err.metadata.get('grpc-status-details-bin')[0] as Buffer).length;

test('a bad request carries its BadRequest and an ErrorInfo whose reason is the code name', (t) => {
  const se = toServiceError(invalidArgument([{ field: 'prompt.name', description: 'is too long' }, { field: 'tags[2]', description: 'is empty' }]));
  t.is(se.code, status.INVALID_ARGUMENT);
  t.deepEqual(violatedFields(se), ['prompt.name', 'tags[2]'], 'only the BadRequest is read as violations');
  t.deepEqual(errorInfo(se), { reason: 'INVALID_ARGUMENT', domain: 'parley', metadata: {} });
  t.is(retryDelayMs(se), undefined);
});

test('every error gets an ErrorInfo, and an unknown one says nothing of its internals', (t) => {
  const missing = toServiceError(notFound`session ${'42'}`);
  t.deepEqual(errorInfo(missing), { reason: 'SESSION_NOT_FOUND', domain: 'parley', metadata: {} });
  t.deepEqual(toServiceError(notFound('extension')).details, 'extension not found');
  t.is(errorInfo(toServiceError(notFound('extension')))?.reason, 'NOT_FOUND', 'no resource named: the code name');
  t.deepEqual(violatedFields(missing), []);
  const internal = toServiceError(new Error('connect ECONNREFUSED 10.0.0.7:5432 password=hunter2'));
  t.is(internal.code, status.INTERNAL);
  t.is(internal.details, 'internal error');
  t.deepEqual(errorInfo(internal), { reason: 'INTERNAL', domain: 'parley', metadata: {} });
  t.false((internal.metadata.get('grpc-status-details-bin')[0] as Buffer).toString('latin1').includes('hunter2'));
});

test('a limit carries its reason, its metadata and, when given, a RetryInfo', (t) => {
  const se = toServiceError(resourceExhausted('RATE_LIMIT', 'too many requests', new Map([['limit_per_second', '10'], ['burst', '20']]), 1_250));
  t.is(se.code, status.RESOURCE_EXHAUSTED);
  t.deepEqual(errorInfo(se), { reason: 'RATE_LIMIT', domain: 'parley', metadata: { limit_per_second: '10', burst: '20' } });
  t.is(retryDelayMs(se), 1_250);
  t.deepEqual(violatedFields(se), []);
});

test('the details stay small however many and however long the violations are', (t) => {
  const long = 'x'.repeat(100_000);
  const many = Array.from({ length: 10_000 }, (_, i) => ({ field: `messages[${i}].${long}`, description: long }));
  const se = toServiceError(new AppError('INVALID_ARGUMENT', long, many, { reason: long, metadata: new Map(Array.from({ length: 100 }, (_, i) => [`k${i}${long}`, long])) }));
  t.true(detailsBytes(se) < 4096, `details are ${detailsBytes(se)} bytes`);
  t.true(violatedFields(se).length > 0, 'the first violations are kept');
  t.true(violatedFields(se)[0]!.startsWith('messages[0].'));
  t.is(errorInfo(se)!.domain, 'parley');
});

test('clip never splits a surrogate pair', (t) => {
  t.is(clip('abc', 3), 'abc');
  t.is(clip('abcdef', 4), 'abc…');
  t.is(clip('ab😀def', 4), 'ab…');
  t.is(clip('a😀cdef', 5), 'a😀c…');
  t.is(clip('a😀cdef', 4), 'a😀…');
});

test('status messages are capped in UTF-8 bytes, not UTF-16 units, and never split a character', (t) => {
  for (const unit of ['a', 'é', '€', '😀']) {
    const se = toServiceError(new AppError('FAILED_PRECONDITION', unit.repeat(5_000)));
    const bytes = Buffer.byteLength(se.details, 'utf8');
    t.true(bytes <= 1024, `${unit}: ${bytes} bytes`);
    t.true(bytes > 1000, `${unit}: cut near the cap, not far below it (${bytes} bytes)`);
    t.true(se.details.endsWith('…'));
    t.false(se.details.includes('\uFFFD'), 'no character split');
  }
  t.is(clipBytes('short', 1024), 'short');
  t.is(notFound`session ${'x'.repeat(10_000)}`.message.length < 100, true, 'a named value is cut to a few dozen characters');
});

test('toServiceError maps an AbortError to CANCELLED and a timeout to DEADLINE_EXCEEDED', (t) => {
  const aborted = toServiceError(new DOMException('This operation was aborted', 'AbortError'));
  t.is(aborted.code, status.CANCELLED);
  t.is(aborted.details, 'cancelled');
  t.deepEqual(errorInfo(aborted), { reason: 'CANCELLED', domain: 'parley', metadata: {} });
  t.is(toServiceError(Object.assign(new Error('aborted'), { name: 'AbortError' })).code, status.CANCELLED);
  t.is(toServiceError(new CallCancelled()).code, status.CANCELLED);
  const late = toServiceError(new DOMException('The operation timed out', 'TimeoutError'));
  t.is(late.code, status.DEADLINE_EXCEEDED);
  t.deepEqual(errorInfo(late), { reason: 'DEADLINE_EXCEEDED', domain: 'parley', metadata: {} });
  t.is(toServiceError(new DeadlineExceeded()).code, status.DEADLINE_EXCEEDED);
});

test('toServiceError takes the status of a call whose signal the client cancelled or the deadline aborted, whatever was thrown', (t) => {
  const cancelled = new AbortController();
  cancelled.abort(new CallCancelled());
  t.is(toServiceError(new Error('connection terminated'), cancelled.signal).code, status.CANCELLED);
  t.is(toServiceError(notFound('thing'), cancelled.signal).code, status.CANCELLED);
  t.is(statusCodeOf(new Error('connection terminated'), cancelled.signal), status.CANCELLED);
  const expired = new AbortController();
  expired.abort(new DeadlineExceeded());
  t.is(toServiceError(new Error('query cut short'), expired.signal).code, status.DEADLINE_EXCEEDED);
  t.is(statusCodeOf(notFound('thing'), expired.signal), status.DEADLINE_EXCEEDED);
});

test('toServiceError keeps the error\'s own status when the signal is live or aborted for another reason (shutdown)', (t) => {
  const live = new AbortController();
  t.is(toServiceError(notFound('thing'), live.signal).code, status.NOT_FOUND);
  t.is(statusCodeOf(new Error('boom'), live.signal), status.INTERNAL);
  const shutdown = new AbortController();
  shutdown.abort(new Error('server shutting down'));
  t.is(toServiceError(notFound('thing'), shutdown.signal).code, status.NOT_FOUND);
  t.is(statusCodeOf(notFound('thing')), status.NOT_FOUND);
  const already = toServiceError(notFound('thing'));
  t.is(toServiceError(already, live.signal), already, 'a ServiceError is a status already');
});
