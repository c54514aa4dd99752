// GC leaves a kept file for a minute after the ADD that wrote it (a runtime's list taken just
// before its end cannot name it): tests of what GC removes make the files that old first.
import { readdir, utimes } from "node:fs/promises";
import { join } from "node:path";

/** Sets every file in dataDir two minutes back, past GC's grace. */
export async function ageKept(dataDir: string): Promise<void> {
  const past = new Date(Date.now() - 120_000);
  for (const name of await readdir(dataDir).catch(() => [] as string[])) await utimes(join(dataDir, name), past, past);
}
