// flanneld's flags as weft takes them (src/cli/flanneld.ts): each entry that is one of weft's must
// name a `weft agent` option with a variable, the one its FLANNELD_<FLAG> is adopted as. Checked
// against the built CLI's own help, which commander prints from the options the agent really has.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { FLANNELD_FLAGS } from "../../src/cli/flanneld.js";
import { projectFile } from "../../src/paths.js";

/** `weft agent --help`, as the CLI prints it; stderr when it fails. */
function agentHelp() {
  return spawnSync(process.execPath, [projectFile("dist", "src", "cli", "main.js"), "agent", "--help"], {
    encoding: "utf8",
  });
}

/** The help's options by long flag, each with its text (description, default, variable) on one line. */
function helpOptions(help: string): Map<string, string> {
  const options = new Map<string, string>();
  let current: string | undefined;
  for (const line of help.split("\n")) {
    // An option starts at the column after "Options:", its description's wrapped lines further in.
    const m = /^ {2}(?:-\w, )?(--[\w-]+)/.exec(line);
    if (m) options.set((current = m[1]), line.trim());
    else if (current && /^ {3,}\S/.test(line)) options.set(current, `${options.get(current)} ${line.trim()}`);
    else current = undefined;
  }
  return options;
}

describe("flanneld's flags", () => {
  it("each one weft shares names a `weft agent` option with a variable, and none of those weft refuses is one", () => {
    const run = agentHelp();
    // A bad entry fails every start, --help too, saying which (stderr may hold Node's own warnings).
    expect(run.status, `weft agent --help (dist/ built? npm run build): ${run.stderr}`).toBe(0);
    expect(run.stderr).not.toMatch(/CLI_FLANNELD_TABLE/);
    const options = helpOptions(run.stdout);
    expect(options.get("--iface")).toMatch(/\(env: WEFT_IFACE\)$/);
    const shared = Object.entries(FLANNELD_FLAGS).flatMap(([name, f]) => ("weft" in f ? [{ name, weft: f.weft }] : []));
    expect(shared.length).toBeGreaterThan(0);
    for (const { name, weft } of shared)
      expect(options.get(weft) ?? "", `flanneld's --${name} as ${weft}`).toMatch(/[(,] ?env: WEFT_[A-Z0-9_]+\)$/);
    for (const [name, f] of Object.entries(FLANNELD_FLAGS))
      if ("none" in f) expect(options.has(`--${name}`), `flanneld's --${name}, refused`).toBe(false);
  });
});
