import { HOT_ELEMENTS, hotKey } from '../../src/genie/cache.js';
import type { KvStore } from '../../src/ports/kv.js';

/** What a session's hot copy holds right now (its head's revision and its elements' texts), or undefined. */
export async function hotCopyOf(kv: KvStore, sessionId: string): Promise<{ revision: number; dialogueLength: number; texts: string[]; bytes: number } | undefined> {
  const { copy } = await kv.readVersioned(hotKey(sessionId), HOT_ELEMENTS);
  if (!copy) return undefined;
  const head = JSON.parse(copy.head) as { revision: number; dialogueLength: number };
  const texts = copy.items.map((i) => (JSON.parse(i) as { actorText: string }).actorText);
  return { revision: head.revision, dialogueLength: head.dialogueLength, texts, bytes: copy.head.length + copy.items.reduce((n, i) => n + i.length, 0) };
}
