import { status, type ServiceError } from '@grpc/grpc-js';
import { ChatRole } from '../../../src/gen/parley/prompt/v1/prompt.js';
import { rpc, type TestServer } from '../../helpers/harness.js';
import type { Holdings } from './world.js';

export interface VictimReport {
  calls: number;
  /** Calls that did not return OK, with their status and message. */
  failures: string[];
  slowestMs: number;
}

/**
 * Another tenant's ordinary traffic beside the fuzz: sessions created, driven and read, prompts opened and
 * logged. Every call must be OK and none slower than `boundMs` (a hang detector, not a timing assertion).
 * Runs until `stop` is called; resolves with what it saw.
 */
export function victimLoop(s: TestServer, v: Holdings, boundMs: number): { stop: () => Promise<VictimReport> } {
  const report: VictimReport = { calls: 0, failures: [], slowestMs: 0 };
  const md = v.tenant.md;
  const g = s.genie;
  const p = s.prompt;
  let running = true;
  const timed = async <T>(what: string, call: (options: { deadline: number }) => Promise<T>): Promise<T | undefined> => {
    const started = performance.now();
    try {
      return await call({ deadline: Date.now() + boundMs });
    } catch (err) {
      const e = err as ServiceError;
      report.failures.push(`${what}: ${status[e.code] ?? e.code} ${e.details ?? e.message}`);
      return undefined;
    } finally {
      report.calls++;
      report.slowestMs = Math.max(report.slowestMs, performance.now() - started);
    }
  };
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const created = await timed('CreateSession', (o) => rpc(g, g.createSession, { endUserId: '', modelType: 'qa', fields: { topic: `round ${i}` }, expireTime: undefined, requestId: '', labels: { round: String(i % 3) } }, md, o));
      const id = created?.session?.sessionId;
      if (id) {
        await timed('SendEvent', (o) => rpc(g, g.sendEvent, { sessionId: id, eventName: 'user_input', actor: 0, actorInput: `question ${i}`, expectedRevision: undefined, requestId: '' }, md, o));
        const read = await timed('GetSession', (o) => rpc(g, g.getSession, { sessionId: id, revision: undefined }, md, o));
        if (read && (read.session?.actorInput !== `question ${i}` || read.session.fields?.topic !== `round ${i}`)) report.failures.push(`GetSession: read back ${JSON.stringify(read.session)}`);
      }
      const promptId = v.promptIds[0]!;
      const message = { role: ChatRole.CHAT_ROLE_USER, content: `hello ${i}`, name: '', toolCalls: [], toolCallId: '', contentParts: [], contentShape: 0, refusal: '', audio: undefined };
      await timed('AppendHistory', (o) => rpc(p, p.appendHistory, { promptId, request: { i }, response: {}, messages: [message], requestId: '' }, md, o));
      await timed('GetPrompt', (o) => rpc(p, p.getPrompt, { id: promptId, sessionKey: '' }, md, o));
      await timed('ListSessions', (o) => rpc(g, g.listSessions, { endUserId: '', modelType: '', state: '', pageSize: 5, pageToken: '', filter: 'labels.round = "1" AND create_time > "2020-01-01T00:00:00Z"', orderBy: 'update_time desc', showTotalSize: true }, md, o));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return report;
    },
  };
}
