/**
 * Waits until `check` holds, polling every few milliseconds; fails with `what` after `timeoutMs`. Tests wait
 * on conditions with this, never for a fixed time: a busy machine only makes the wait longer.
 */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
