// Waiting in tests for something the kernel does asynchronously: polls `probe` (which may ask a
// child process, so it may be async) every few milliseconds, bounded in time, and fails with
// `what` when the time is up.
import { setTimeout as sleep } from "node:timers/promises";

export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 3000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await probe();
    if (result !== undefined) return result;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}
