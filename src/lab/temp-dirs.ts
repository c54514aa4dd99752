// Temp dirs of weft's tools (a cluster's CNI work dir, the agents' dirs, a benchmark's files),
// removed when the process exits (its end, an error, process.exit). Ctrl-C and SIGTERM end it
// through 'exit' only where something handles them (the namespaces' hook, a tool's own handler);
// otherwise the signal's default action kills the process, no 'exit' runs and the dirs stay.
// Apart from the namespaces (netns.ts): a tool with no namespace (the microbenchmarks' runner)
// must not load them, whose hook sweeps other runs' namespaces and makes SIGINT and SIGTERM exit.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Not removed yet. */
const live = new Set<string>();
let hooked = false;

/** Makes `<temp dir>/<prefix>XXXXXX`, removed by removeTempDir or else at exit. */
export function makeTempDir(prefix: string): string {
  if (!hooked) {
    hooked = true;
    // Appended: the namespaces' hook, which kills the processes that could still write into
    // these dirs, puts itself before every other exit listener.
    process.once("exit", removeTempDirsSync);
  }
  const dir = mkdtempSync(join(tmpdir(), prefix));
  live.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  live.delete(dir);
}

function removeTempDirsSync(): void {
  for (const dir of live) {
    // A throw here would skip the exit listeners after this one: a dir left behind (a plugin
    // still writing into it) is the smaller harm.
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {}
  }
  live.clear();
}
