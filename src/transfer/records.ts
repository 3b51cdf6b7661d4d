/**
 * Moving sessions with a client: ExportSession's records as they stream, ImportSession fed from any source
 * of records (an export, JSON lines, a converter from another system), and the JSON lines form itself.
 * Nothing here touches storage: this is what `parley export` / `parley import` run against a server.
 */
import { createFileRegistry, fromBinary, fromJsonString, toBinary, toJsonString, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { Metadata, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { SessionRecord, type GenieServiceClient, type ImportSessionRequest, type ImportSessionResponse } from '../gen/parley/genie/v1/genie.js';
import { loadImage } from '../transport/reflection.js';

/** What importSessions did: one line per refused session, short. */
export interface ImportReport {
  imported: number;
  refused: Array<{ sessionId: string; reason: string }>;
  /** The new ids, by exported id (the same without keep_session_id only by chance). */
  ids: Map<string, string>;
}

export interface ImportOptions {
  /** Keep the exported ids (ALREADY_EXISTS when taken) instead of getting new ones. */
  keepSessionIds: boolean;
  metadata: Metadata;
}

/** Call metadata carrying an API key as a bearer token. */
export function bearerMetadata(apiKey: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${apiKey}`);
  return md;
}

/**
 * One session's records as ExportSession streams them, trailer last. The stream is read as the caller
 * consumes it (gRPC flow control holds the server back); an export that fails ends with that error, never
 * with a trailer.
 */
export async function* exportSession(client: GenieServiceClient, sessionId: string, allRevisions: boolean, md: Metadata): AsyncGenerator<SessionRecord> {
  const call = client.exportSession({ sessionId, allRevisions }, md);
  try {
    for await (const res of call as AsyncIterable<{ record?: SessionRecord }>) if (res.record) yield res.record;
  } finally {
    call.cancel();
  }
}

/**
 * Imports every session in `records` (each starts with its header and ends with its trailer), one
 * ImportSession call per session, and counts what was imported and what refused (with the server's short
 * reason). A session refused does not stop the others; a stream that does not start with a header, or ends
 * in the middle of a session, is refused for that session.
 */
export async function importSessions(client: GenieServiceClient, records: AsyncIterable<SessionRecord>, options: ImportOptions): Promise<ImportReport> {
  const report: ImportReport = { imported: 0, refused: [], ids: new Map() };
  let current: { sessionId: string; call: ClientWritableStream<ImportSessionRequest>; done: Promise<ImportSessionResponse>; first: boolean } | undefined;
  const finish = async (cut: boolean) => {
    const c = current;
    current = undefined;
    if (!c) return;
    if (cut) c.call.cancel();
    else c.call.end();
    try {
      const res = await c.done;
      report.imported++;
      report.ids.set(c.sessionId, res.session?.sessionId ?? '');
    } catch (err) {
      report.refused.push({ sessionId: c.sessionId, reason: cut ? 'the records ended before its trailer' : shortReason(err) });
    }
  };
  // After a refusal, the rest of that session's records until the next header.
  let skipping = false;
  let orphan = 0;
  try {
  for await (const record of records) {
    if (record.header) {
      skipping = false;
      await finish(true);
      const call = startImport(client, options.metadata);
      current = { sessionId: record.header.sessionId, call: call.call, done: call.done, first: true };
    }
    if (!current) {
      if (skipping) continue;
      // Records before any header belong to no session: they are counted once, as one refusal.
      if (orphan++ === 0) report.refused.push({ sessionId: '', reason: 'records before any header' });
      continue;
    }
    const first = current.first;
    current.first = false;
    const ok = await write(current.call, { record, keepSessionId: first && options.keepSessionIds, requestId: '' });
    if (!ok) {
      // The server ended the call (a refusal): its status is the answer; skip to the next header.
      const c = current;
      current = undefined;
      skipping = true;
      await c.done.then(
        () => undefined,
        (err: unknown) => report.refused.push({ sessionId: c.sessionId, reason: shortReason(err) }),
      );
      continue;
    }
    if (record.trailer) await finish(false);
  }
  } finally {
    // A session the records left unfinished (they ended, or failed) is cancelled: it imports nothing.
    await finish(true);
  }
  return report;
}

function startImport(client: GenieServiceClient, md: Metadata): { call: ClientWritableStream<ImportSessionRequest>; done: Promise<ImportSessionResponse> } {
  let call!: ClientWritableStream<ImportSessionRequest>;
  const done = new Promise<ImportSessionResponse>((resolve, reject) => {
    call = client.importSession(md, (err: ServiceError | null, res?: ImportSessionResponse) => (err || !res ? reject(err ?? new Error('no response')) : resolve(res)));
  });
  // A refusal is read from `done`; a write after it must not throw.
  call.on('error', () => {});
  done.catch(() => {});
  return { call, done };
}

/** Writes one message with backpressure; false when the call has ended (the server answered already). */
function write(call: ClientWritableStream<ImportSessionRequest>, message: ImportSessionRequest): Promise<boolean> {
  if (call.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    let settled = false;
    const settle = (v: boolean) => {
      if (settled) return;
      settled = true;
      call.off('status', onStatus);
      resolve(v);
    };
    const onStatus = () => settle(false);
    call.on('status', onStatus);
    const more = call.write(message, () => settle(true));
    if (more) settle(true);
  });
}

/** The server's message of a refusal, on one line and short. */
function shortReason(err: unknown): string {
  const e = err as Partial<ServiceError>;
  const text = (e.details || e.message || String(err)).replace(/\s+/g, ' ');
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

// ---------------------------------------------------------------------------------------------------------
// JSON lines

let recordDesc: DescMessage | undefined;
/** SessionRecord's descriptor, from the contracts' image: canonical proto3 JSON, as buf curl prints it. */
function descriptor(): DescMessage {
  if (!recordDesc) {
    const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, loadImage()));
    const found = registry.getMessage('parley.genie.v1.SessionRecord');
    if (!found) throw new Error('parley.genie.v1.SessionRecord is missing from the contracts image');
    recordDesc = found;
  }
  return recordDesc;
}

/** A record as one line of proto3 JSON. */
export function recordToJson(record: SessionRecord): string {
  const desc = descriptor();
  return toJsonString(desc, fromBinary(desc, SessionRecord.encode(record).finish()));
}

/** One line of proto3 JSON as a record; throws naming the line when it is none. */
export function recordFromJson(line: string, lineNumber: number): SessionRecord {
  const desc = descriptor();
  try {
    return SessionRecord.decode(toBinary(desc, fromJsonString(desc, line)));
  } catch (err) {
    throw new Error(`line ${lineNumber}: not a SessionRecord as proto3 JSON (${(err as Error).message.slice(0, 200)})`);
  }
}

/** The records of JSON lines (blank lines skipped). */
export async function* recordsFromLines(lines: AsyncIterable<string>): AsyncGenerator<SessionRecord> {
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    yield recordFromJson(line, n);
  }
}
