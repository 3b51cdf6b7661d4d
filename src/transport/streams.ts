import { once } from 'node:events';
import type { ServerDuplexStream, ServerWritableStream } from '@grpc/grpc-js';

/**
 * Writes one message with backpressure: when grpc-js's buffer is full it waits for the client to drain
 * it, and gives up quietly when the call ends (the signal aborts). A consumer that stays behind is cut off
 * by the feed's bounded buffer, not here.
 */
export async function send<T>(
  call: ServerWritableStream<unknown, T> | ServerDuplexStream<unknown, T>,
  message: T,
  signal: AbortSignal,
): Promise<void> {
  if (call.write(message)) return;
  await once(call, 'drain', { signal }).catch(() => {});
}
