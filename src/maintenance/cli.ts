import type { Config } from '../config.js';
import { parseDuration } from '../config.js';
import { describePurge, type FullPurgeReport } from './purge.js';
import type { PurgeExpiredDataResponse } from '../gen/parley/admin/v1/admin.js';
import type { ClientTlsFiles } from '../transport/tls.js';

export interface PurgeArgs {
  olderThan: string;
  batchSize: number | undefined;
  /** host:port of a running server: the purge then runs there, through AdminService.PurgeExpiredData. */
  address: string | undefined;
  /** PEM files to reach a server at `address` over TLS (none: plaintext). */
  tls: ClientTlsFiles;
}

/** `parley purge`: over the admin RPC when an address is given, else in this process on storage it opens. */
export async function purgeCommand(config: Config, args: PurgeArgs): Promise<string> {
  const olderThanMs = parseDuration(args.olderThan);
  if (args.address) return describePurge(await purgeRemote(config, args.address, olderThanMs, args.batchSize, args.tls));
  const { openStorage, maintenance } = await import('../app.js');
  const { migrate } = await import('../storage/db.js');
  // Opening an embedded data dir a server holds fails here, on its lock, before anything is read.
  const { db, store } = await openStorage(config);
  try {
    await migrate(db);
    return describePurge(await maintenance(db, store, config).purge({ olderThanMs, batchSize: args.batchSize }));
  } finally {
    await store.close();
    await db.destroy();
  }
}

async function purgeRemote(config: Config, address: string, olderThanMs: number, batchSize: number | undefined, tls: ClientTlsFiles): Promise<FullPurgeReport> {
  if (!config.adminToken) throw new Error('purge --address needs PARLEY_ADMIN_TOKEN, the token of the server at that address');
  const { Metadata } = await import('@grpc/grpc-js');
  const { AdminServiceClient } = await import('../gen/parley/admin/v1/admin.js');
  const { clientCredentials } = await import('../transport/tls.js');
  const client = new AdminServiceClient(address, await clientCredentials(tls));
  const md = new Metadata();
  md.set('authorization', `Bearer ${config.adminToken}`);
  const req = { olderThan: { seconds: Math.floor(olderThanMs / 1000), nanos: (olderThanMs % 1000) * 1e6 }, batchSize: batchSize ?? 0 };
  try {
    const r = await new Promise<PurgeExpiredDataResponse>((resolve, reject) =>
      client.purgeExpiredData(req, md, (err, res) => (err ? reject(new Error(`the server at ${address} answered: ${err.details || err.message}`)) : resolve(res))),
    );
    return {
      prompts: r.promptCount,
      history: r.historyEntryCount,
      toolCalls: r.toolCallCount,
      pluginUsage: r.pluginUsageCount,
      sessions: r.sessionCount,
      tombstones: r.tombstoneCount,
      requestIds: r.requestIdCount,
      batches: r.batchCount,
    };
  } finally {
    client.close();
  }
}
