import fc from 'fast-check';
import { Client, credentials, status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import type { Case, Message } from './generators.js';
import type { Rpc } from './rpcs.js';
import type { World } from './world.js';
import { patchMarkers } from './wire.js';
import { violatedFields } from '../../helpers/harness.js';

const DEFAULT_SEED = 20261126;

/** The knobs of a run, from the environment (see README, "Fuzzing"). */
export const fuzzEnv = {
  /** Calls of a run (unary and streaming together); the bounded default keeps `npm test` fast. */
  runs: Number(process.env.PARLEY_FUZZ_RUNS || 400),
  /**
   * A fixed seed unless told otherwise, so `npm test` runs the same cases every time (a test that fails only
   * on some runs blocks everyone); `PARLEY_FUZZ_SEED=random` explores new ones.
   */
  seed:
    process.env.PARLEY_FUZZ_SEED === 'random'
      ? Math.floor(Math.random() * 2 ** 31)
      : Number(process.env.PARLEY_FUZZ_SEED || DEFAULT_SEED),
  /** Comma-separated `Service/Method` names (or substrings of them) to fuzz only those. */
  rpcs: process.env.PARLEY_FUZZ_RPCS ? process.env.PARLEY_FUZZ_RPCS.split(',').map((s) => s.trim()) : undefined,
  /** Replays the one call of this index (with the same seed and filter). */
  call: process.env.PARLEY_FUZZ_CALL ? Number(process.env.PARLEY_FUZZ_CALL) : undefined,
  /** Every call must answer within this; DEADLINE_EXCEEDED counts as a hang. */
  deadlineMs: Number(process.env.PARLEY_FUZZ_DEADLINE_MS || 10_000),
  concurrency: Number(process.env.PARLEY_FUZZ_CONCURRENCY || 4),
};

/** Statuses that are a server bug whatever the request. */
export const FORBIDDEN = new Set<number>([status.INTERNAL, status.UNKNOWN, status.DATA_LOSS, status.DEADLINE_EXCEEDED, status.UNIMPLEMENTED]);
export const MAX_MESSAGE_BYTES = 1024;

export interface Outcome {
  /** The call's final status (CANCELLED when the fuzz cancelled it). */
  code: number;
  details: string;
  ms: number;
  /** What happened, in order, when `execute` was asked to trace (a replay of one call). */
  trace?: string[];
  /** Problems found: a forbidden status, a long message, an undecodable response, an error inside a Chat. */
  problems: string[];
}

export interface Failure {
  index: number;
  rpc: string;
  seed: number;
  problems: string[];
  request: string;
}

/** The case of call `index` of a run: the same seed, filter and index give the same case. */
export function sampleCase(arb: fc.Arbitrary<Case>, seed: number, index: number): Case {
  return fc.sample(arb, { seed: (seed + Math.imul(index, 0x9e3779b1)) | 0, numRuns: 1 })[0]!;
}

export function fuzzClient(address: string): Client {
  return new Client(address, credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    // Its own connection: the victim's calls must not share it.
    'grpc.use_local_subchannel_pool': 1,
  });
}

const identity = (b: Buffer) => b;

/** The bytes of one message as the case says: encoded, markers patched, extras appended or mangled. */
function encode(rpc: Rpc, m: Message): Buffer {
  if (m.mangle instanceof Uint8Array) return Buffer.from(m.mangle);
  let bytes: Buffer;
  try {
    bytes = patchMarkers(rpc.serialize(m.req as never));
  } catch {
    // Something the generated encoder refuses (an int32 out of range): send the junk of a broken client.
    bytes = Buffer.from([0x0a, 0xff, 0xff]);
  }
  bytes = Buffer.concat([bytes, ...m.extra]);
  return m.mangle === 'truncate' && bytes.length > 1 ? bytes.subarray(0, Math.floor(bytes.length / 2)) : bytes;
}

function checkStatus(code: number, details: string, problems: string[], where = ''): void {
  if (FORBIDDEN.has(code)) problems.push(`${where}status ${status[code]} (${code}): ${details.slice(0, 300)}`);
  if (Buffer.byteLength(details ?? '') > MAX_MESSAGE_BYTES) problems.push(`${where}error message of ${Buffer.byteLength(details)} bytes: ${JSON.stringify(details.slice(0, 80))}…${JSON.stringify(details.slice(-40))}`);
}

function checkResponse(rpc: Rpc, bytes: Buffer, problems: string[], trace?: string[]): void {
  let res: unknown;
  try {
    res = rpc.deserialize(bytes);
    trace?.push(`response ${repr(res, 300)}`);
  } catch (err) {
    problems.push(`response does not decode: ${(err as Error).message}`);
    return;
  }
  // A Chat stream answers each bad request with an error inside the stream: the same statuses are bugs.
  const chatError = (res as { error?: { code: number; message: string } }).error;
  if (rpc.name === 'GenieService/Chat' && chatError) checkStatus(chatError.code, chatError.message, problems, 'chat error: ');
}

/** Runs one case and reports how it ended. Never throws; never waits past the deadline (plus a margin). */
export function execute(client: Client, rpc: Rpc, c: Case, w: World, deadlineMs: number, trace?: string[]): Promise<Outcome> {
  const md: Metadata = w.md[c.caller].clone();
  const started = performance.now();
  const deadline = Date.now() + deadlineMs;
  const problems: string[] = [];
  const bytes = c.messages.map((m) => encode(rpc, m));
  return new Promise<Outcome>((resolve) => {
    let done = false;
    let cancelled = false;
    let linger: NodeJS.Timeout | undefined;
    // grpc-js ends every call by its deadline; this only guards the guard, so that a run always ends.
    const stuck = setTimeout(() => {
      problems.push(`no status ${deadlineMs + 5_000} ms after the call started`);
      finish({ code: status.DEADLINE_EXCEEDED, details: 'no status from the client library' } as ServiceError);
    }, deadlineMs + 5_000);
    const finish = (err: ServiceError | null) => {
      if (done) return;
      done = true;
      clearTimeout(linger);
      clearTimeout(stuck);
      const code = err ? err.code : status.OK;
      const details = err?.details ?? '';
      // The fuzz's own cancellation is not the server's answer.
      if (!(cancelled && code === status.CANCELLED)) checkStatus(code, details, problems);
      // AIP-193: a refusal says which field, so a client (or a person) can fix the request.
      if (code === status.INVALID_ARGUMENT && err && violatedFields(err).length === 0) problems.push(`INVALID_ARGUMENT without a field violation: ${details.slice(0, 200)}`);
      trace?.push(`status ${status[code]} ${details.slice(0, 200)} after ${Math.round(performance.now() - started)} ms`);
      resolve({ code, details, ms: performance.now() - started, problems, trace });
    };
    const options = { deadline };
    switch (rpc.kind) {
      case 'unary': {
        client.makeUnaryRequest(rpc.path, identity, identity, bytes[0]!, md, options, (err, res) => {
          if (!err && res) checkResponse(rpc, res, problems, trace);
          finish(err);
        });
        return;
      }
      case 'server-stream': {
        const call = client.makeServerStreamRequest(rpc.path, identity, identity, bytes[0]!, md, options);
        const cancel = () => {
          cancelled = true;
          call.cancel();
        };
        call.on('data', (b: Buffer) => {
          checkResponse(rpc, b, problems, trace);
          cancel();
        });
        call.on('error', (e: ServiceError) => finish(e));
        call.on('status', (s) => finish(s.code === status.OK ? null : (s as ServiceError)));
        if (c.action === 'cancel-now') cancel();
        else linger = setTimeout(cancel, c.lingerMs);
        return;
      }
      case 'client-stream':
      case 'bidi': {
        const call =
          rpc.kind === 'bidi'
            ? client.makeBidiStreamRequest(rpc.path, identity, identity, md, options)
            : client.makeClientStreamRequest(rpc.path, identity, identity, md, options, (err, res) => {
                if (!err && res) checkResponse(rpc, res, problems, trace);
                finish(err);
              });
        const cancel = () => {
          cancelled = true;
          call.cancel();
        };
        if (rpc.kind === 'bidi') {
          const bidi = call as ReturnType<Client['makeBidiStreamRequest']>;
          bidi.on('data', (b: Buffer) => checkResponse(rpc, b, problems, trace));
          bidi.on('error', (e: ServiceError) => finish(e));
          bidi.on('status', (s) => finish(s.code === status.OK ? null : (s as ServiceError)));
        }
        call.on('error', () => {});
        if (c.action === 'cancel-now') {
          cancel();
          return;
        }
        for (const b of bytes) call.write(b);
        if (c.action === 'half-close') call.end();
        else linger = setTimeout(cancel, c.lingerMs);
        return;
      }
    }
  });
}

/** A request in a line: long strings and bytes shortened, numbers JSON cannot show spelled out. */
export function repr(value: unknown, max = 1000): string {
  const text = JSON.stringify(value, (k, v: unknown) => {
    if (k === 'pageToken' && typeof v === 'string' && v.length > 0 && v.length < 2000) {
      const doc = Buffer.from(v, 'base64url').toString('utf8');
      if (doc.startsWith('{')) return `base64url(${doc.length > 300 ? `${doc.slice(0, 300)}…` : doc})`;
    }
    if (typeof v === 'string') return v.length > 120 ? `${v.slice(0, 40)}…(${v.length} chars)` : v;
    if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
    if (typeof v === 'number' && Object.is(v, -0)) return '-0';
    if (v instanceof Uint8Array) return `<${v.length} bytes ${Buffer.from(v.subarray(0, 16)).toString('hex')}>`;
    if (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer') return `<buffer>`;
    return v;
  });
  return text && text.length > max ? `${text.slice(0, max)}…` : (text ?? String(value));
}

/** Runs `count` tasks with at most `limit` in flight. */
export async function pool(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) await task(i);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}
