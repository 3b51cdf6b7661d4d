import type { Row } from './lib.js';

export async function runStreaming(_: unknown): Promise<Row[]> {
  return [];
}
