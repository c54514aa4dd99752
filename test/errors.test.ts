import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../src/config/net-conf.js";
import { makeConfig } from "../src/control/gossip/config.js";
import { Keyring } from "../src/control/gossip/keyring.js";
import { isWeftError, WeftError } from "../src/errors.js";
import { projectFile } from "../src/paths.js";

const caught = async (f: () => unknown): Promise<WeftError> => {
  try {
    await f();
  } catch (e) {
    expect(e).toBeInstanceOf(WeftError);
    return e as WeftError;
  }
  throw new Error("expected a WeftError");
};

describe("one error model", () => {
  it("gives net-conf.json, a gossip profile and a key file distinct namespaced codes, never repeated in the message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-errors-"));
    let errors: WeftError[];
    try {
      writeFileSync(join(dir, "key"), "bm90IGEga2V5\n", { mode: 0o600 });
      errors = [
        await caught(() => parseNetConf("{ Network: ")),
        await caught(() => parseNetConf(JSON.stringify({ Network: "198.19.0.0/16", Colour: 1 }))),
        await caught(() => makeConfig("lan", "")),
        await caught(() => Keyring.fromKeyFile(join(dir, "key"))),
      ];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(errors.map((e) => e.code)).toEqual([
      "CONFIG_NET_CONF_NOT_JSON",
      "CONFIG_NET_CONF_INVALID",
      "GOSSIP_CONFIG_INVALID",
      "GOSSIP_KEY_FILE_INVALID",
    ]);
    for (const e of errors) {
      expect(e.name).toBe("WeftError");
      expect(e.message).not.toContain(e.code);
    }
    expect(isWeftError(errors[3], "GOSSIP_KEY_FILE_INVALID")).toBe(true);
    expect(isWeftError(errors[3], "GOSSIP_KEY_INVALID")).toBe(false);
  });

  it("lists every code: errors' in src/errors.ts, those only the log carries under README.md's Log codes", () => {
    const errorCodes = new Set(
      readFileSync(projectFile("src", "errors.ts"), "utf8").match(/(?<=")[A-Z][A-Z0-9_]+(?=")/g),
    );
    // A code-shaped string on a line naming `code`: a log call's `{ code: "…" }`, or a code picked for one.
    const logged = new Set<string>();
    for (const file of readdirSync(projectFile("src"), { recursive: true, encoding: "utf8" }).filter((f) =>
      f.endsWith(".ts"),
    ))
      for (const m of readFileSync(projectFile("src", file), "utf8").matchAll(
        /\bcode\b[^;\n]*?"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"/g,
      ))
        if (!m[1].startsWith("ERR_")) logged.add(m[1]); // Node's own codes (a caught error's) are not weft's.
    expect(logged).toContain("AGENT_SUBNET_LOST");
    const readme = readFileSync(projectFile("README.md"), "utf8");
    const section = readme.slice(readme.indexOf("\n### Log codes\n"), readme.indexOf("\n## Deploying\n"));
    const listed = [...section.matchAll(/^- `([A-Z0-9_]+)`/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual([...logged].filter((c) => !errorCodes.has(c)).sort());
  });
});
