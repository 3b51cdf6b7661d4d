import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ClientTlsFiles } from '../transport/tls.js';
import type { GenieServiceClient } from '../gen/parley/genie/v1/genie.js';

export interface TransferArgs {
  /** host:port of the server. */
  address: string;
  tls: ClientTlsFiles;
  /** The caller's API key (PARLEY_API_KEY). */
  apiKey: string | undefined;
}

/** Where a command writes its lines (stdout). */
export interface Output {
  line(text: string): Promise<void>;
}

async function connect(args: TransferArgs): Promise<GenieServiceClient> {
  if (!args.apiKey) throw new Error('needs PARLEY_API_KEY, an API key of the account whose sessions move');
  const { GenieServiceClient: Client } = await import('../gen/parley/genie/v1/genie.js');
  const { clientCredentials } = await import('../transport/tls.js');
  return new Client(args.address, await clientCredentials(args.tls));
}

/**
 * `parley export`: each session's records as JSON lines on `out`, one session after the other. A session
 * that cannot be exported stops the command (its records so far have no trailer, so no import takes them).
 */
export async function exportCommand(args: TransferArgs & { allRevisions: boolean; sessionIds: string[] }, out: Output): Promise<number> {
  if (args.sessionIds.length === 0) throw new Error('export needs at least one session id');
  const client = await connect(args);
  const { bearerMetadata, exportSession, recordToJson } = await import('./records.js');
  const md = bearerMetadata(args.apiKey!);
  try {
    for (const id of args.sessionIds) {
      try {
        for await (const record of exportSession(client, id, args.allRevisions, md)) await out.line(recordToJson(record));
      } catch (err) {
        throw new Error(`session ${id}: ${(err as { details?: string }).details || (err as Error).message}`);
      }
    }
    return 0;
  } finally {
    client.close();
  }
}

/**
 * `parley import`: the sessions in JSON lines (a file, or stdin) imported one by one; prints how many were
 * imported and one short line per refused session. Non-zero when any was refused.
 */
export async function importCommand(args: TransferArgs & { keepIds: boolean; file: string | undefined }, out: Output): Promise<number> {
  const client = await connect(args);
  const { bearerMetadata, importSessions, recordsFromLines } = await import('./records.js');
  const input = args.file ? createReadStream(args.file, 'utf8') : process.stdin;
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    const report = await importSessions(client, recordsFromLines(lines), { keepSessionIds: args.keepIds, metadata: bearerMetadata(args.apiKey!) });
    await out.line(`imported: ${report.imported}, refused: ${report.refused.length}`);
    for (const r of report.refused) await out.line(`refused ${r.sessionId || '(no header)'}: ${r.reason}`);
    return report.refused.length ? 1 : 0;
  } finally {
    lines.close();
    client.close();
  }
}
