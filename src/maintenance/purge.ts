import type { GenieUseCases } from '../genie/service.js';
import type { PromptUseCases, PurgeReport } from '../prompt/service.js';

export const DEFAULT_PURGE_BATCH = 500;

export interface PurgeOptions {
  /** Prompts idle, and session tombstones deleted, longer ago than this go. */
  olderThanMs: number;
  batchSize?: number | undefined;
  /** The clock of the retention decisions; tests move it instead of waiting. */
  now?: Date | undefined;
}

export interface FullPurgeReport extends PurgeReport {
  sessions: number;
  tombstones: number;
}

/**
 * Retention across services, one short transaction per batch, run by whichever process owns the
 * storage: the server (AdminService.PurgeExpiredData) or `parley purge` when no server holds it.
 */
export class Maintenance {
  constructor(
    private readonly prompts: PromptUseCases,
    private readonly genie: GenieUseCases,
  ) {}

  async purge(opts: PurgeOptions): Promise<FullPurgeReport> {
    const now = opts.now ?? new Date();
    const batchSize = opts.batchSize ?? DEFAULT_PURGE_BATCH;
    const p = await this.prompts.purgeIdle({ olderThanMs: opts.olderThanMs, now, batchSize });
    const g = await this.genie.purgeExpired({ now, tombstoneCutoff: new Date(now.getTime() - opts.olderThanMs), batchSize });
    return { ...p, sessions: g.sessions, tombstones: g.tombstones, batches: p.batches + g.batches };
  }
}

export function describePurge(r: FullPurgeReport): string {
  return (
    `purged ${r.prompts} prompts (${r.history} history entries, ${r.toolCalls} tool calls, ${r.pluginUsage} plugin usages), ` +
    `${r.sessions} genie sessions and ${r.tombstones} session tombstones in ${r.batches} batches; expired ${r.requestIds} request ids`
  );
}
