import type { LoadCommand, LoadReply } from './lib.js';

export async function handle(cmd: LoadCommand, _send: (r: LoadReply) => void): Promise<unknown> {
  throw new Error(`${cmd.kind}: not available`);
}
