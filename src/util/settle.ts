// Waiting for a group of tasks that each own something (a process, a namespace) to clean up.

/**
 * Like Promise.all, but waits for every part before it rejects with the first failure, so no part
 * is still running (a traffic tool, a teardown) when the caller moves on.
 */
export async function settleAll<T extends readonly unknown[] | []>(
  parts: T,
): Promise<{ -readonly [P in keyof T]: Awaited<T[P]> }> {
  const results = await Promise.allSettled(parts);
  for (const r of results) if (r.status === "rejected") throw r.reason;
  return Promise.all(parts);
}
