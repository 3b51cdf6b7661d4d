import type { Principal } from '../principal.js';
import type { GenieUseCases } from '../genie/service.js';
import type { PromptUseCases } from '../prompt/service.js';

/** Sessions (or prompts) deleted per transaction: short enough that no erasure holds locks for long. */
export const DEFAULT_ERASE_BATCH = 100;

/** What one EraseEndUser call deleted. */
export interface ErasureReport {
  sessions: number;
  dialogueElements: number;
  sessionRevisions: number;
  secondaryValues: number;
  prompts: number;
  historyEntries: number;
  toolCalls: number;
  pluginUsages: number;
  requestIds: number;
}

/**
 * Erasure of one end user of an account: their genie sessions, then their prompts, each through the
 * aggregate's own deletion (so caches, watchers and stored answers are handled as DeleteSession and
 * DeletePrompt handle them), in batches of short transactions.
 *
 * Safe to repeat, and the reason it needs no request id: every batch commits on its own and deletes only
 * what is still there, so a call cut short (an error, a lost connection) leaves a state a repeat finishes,
 * and a repeat of a finished call deletes nothing and reports zeros. A session or prompt created for the end
 * user while a call runs is erased by it only if it commits before the call's last batch is read.
 */
export class EndUserErasure {
  constructor(
    private readonly genie: GenieUseCases,
    private readonly prompts: PromptUseCases,
    private readonly batchSize = DEFAULT_ERASE_BATCH,
  ) {}

  async erase(caller: Principal, endUserId: string): Promise<ErasureReport> {
    const g = await this.genie.eraseEndUser(caller, endUserId, this.batchSize);
    const p = await this.prompts.eraseEndUser(caller, endUserId, this.batchSize);
    return {
      sessions: g.sessions,
      dialogueElements: g.dialogue,
      sessionRevisions: g.revisions,
      secondaryValues: g.secondary,
      prompts: p.prompts,
      historyEntries: p.history,
      toolCalls: p.toolCalls,
      pluginUsages: p.pluginUsage,
      requestIds: g.requestIds + p.requestIds,
    };
  }
}
