import { randomUUID } from 'node:crypto';
import type { Db } from './db.js';
import { asDate, asJson } from './rows.js';

export interface PromptRow {
  id: string;
  accountId: string;
  userProfileId: string;
  llmClientId: string;
  name: string;
  description: string;
  version: string;
  annotations: Record<string, string>;
  tags: string[];
  sessionKey: string;
  ipAddress: string;
  userAgent: string;
  url: string;
  createdAt: Date;
  updatedAt: Date;
}

export type NewPrompt = Omit<PromptRow, 'id' | 'createdAt' | 'updatedAt'>;

export const promptFromRow = (r: any): PromptRow => ({
  id: r.id,
  accountId: r.account_id,
  userProfileId: r.user_profile_id,
  llmClientId: r.llm_client_id,
  name: r.name,
  description: r.description,
  version: r.version,
  annotations: asJson(r.annotations),
  tags: r.tags ?? [],
  sessionKey: r.session_key,
  ipAddress: r.ip_address,
  userAgent: r.user_agent,
  url: r.url,
  createdAt: asDate(r.created_at),
  updatedAt: asDate(r.updated_at),
});

export class PromptRepo {
  constructor(private readonly db: Db) {}

  /**
   * Inserts unless the session key exists; returns the row either way with `created` telling which.
   * ON CONFLICT makes two racing opens of one new key agree on a single prompt.
   */
  async insertOrGet(p: NewPrompt): Promise<{ row: PromptRow; created: boolean }> {
    const inserted = await this.db('prompts')
      .insert({
        id: randomUUID(),
        account_id: p.accountId,
        user_profile_id: p.userProfileId,
        llm_client_id: p.llmClientId,
        name: p.name,
        description: p.description,
        version: p.version,
        annotations: JSON.stringify(p.annotations),
        tags: p.tags,
        session_key: p.sessionKey,
        ip_address: p.ipAddress,
        user_agent: p.userAgent,
        url: p.url,
      })
      .onConflict('session_key')
      .ignore()
      .returning('*');
    if (inserted[0]) return { row: promptFromRow(inserted[0]), created: true };
    const existing = await this.bySessionKey(p.sessionKey);
    if (!existing) throw new Error(`prompt ${p.sessionKey} vanished between insert and read`);
    return { row: existing, created: false };
  }

  async byId(id: string): Promise<PromptRow | undefined> {
    const r = await this.db('prompts').where({ id }).first();
    return r && promptFromRow(r);
  }

  async bySessionKey(sessionKey: string): Promise<PromptRow | undefined> {
    const r = await this.db('prompts').where({ session_key: sessionKey }).first();
    return r && promptFromRow(r);
  }
}
