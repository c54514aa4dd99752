import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../src/config/net-conf.js";
import { makeConfig } from "../src/control/gossip/config.js";
import { Keyring } from "../src/control/gossip/keyring.js";
import { isWeftError, WeftError } from "../src/errors.js";

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
    writeFileSync(join(dir, "key"), "bm90IGEga2V5\n", { mode: 0o600 });
    const errors = [
      await caught(() => parseNetConf("{ Network: ")),
      await caught(() => parseNetConf(JSON.stringify({ Network: "198.19.0.0/16", Colour: 1 }))),
      await caught(() => makeConfig("lan", "")),
      await caught(() => Keyring.fromKeyFile(join(dir, "key"))),
    ];
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
});
