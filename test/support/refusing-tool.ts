// A program first on PATH that refuses, as the kernel would, a script it reads on stdin (`ip
// -batch -`, `nft -f -`) holding a line that matches one of the patterns set (grep -E); anything
// else, and every script while none is set, runs as the real program does. For seeing what weft
// does when a removal is refused, which no namespace of a test can make the kernel do.
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RefusingTool {
  /** The directory to put first on PATH. */
  bin: string;
  /** Refuses scripts with a line matching any of `patterns` from now on; none: refuses nothing. */
  refuse(...patterns: string[]): Promise<void>;
  remove(): Promise<void>;
}

/** Where `tool` is on this process's PATH: the real program, for a stand-in put first on an agent's. */
export function toolPath(tool: "ip" | "nft"): string {
  return execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
}

export async function refusingTool(tool: "ip" | "nft"): Promise<RefusingTool> {
  const real = toolPath(tool);
  const bin = await mkdtemp(join(tmpdir(), `weft-refusing-${tool}-`));
  const patterns = join(bin, "refused");
  await writeFile(patterns, "");
  await writeFile(
    join(bin, tool),
    [
      "#!/bin/sh",
      `case " $* " in *" -batch - "*|*" -f - "*) ;; *) exec '${real}' "$@" ;; esac`,
      "script=$(cat)",
      `if [ -s '${patterns}' ] && printf '%s\\n' "$script" | grep -qE -f '${patterns}'; then`,
      `  echo "${tool}: Operation not permitted (refused by the test)" >&2`,
      '  echo "Command failed -:1" >&2',
      "  exit 1",
      "fi",
      `printf '%s\\n' "$script" | exec '${real}' "$@"`,
      "",
    ].join("\n"),
  );
  await chmod(join(bin, tool), 0o755);
  return {
    bin,
    refuse: (...p) => writeFile(patterns, p.map((x) => `${x}\n`).join("")),
    remove: () => rm(bin, { recursive: true, force: true }),
  };
}
