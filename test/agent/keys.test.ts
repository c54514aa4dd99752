// The agent's key file read again on SIGHUP (AgentKeys.reload): what the log says when a part told
// of the new keys throws, and when the file's key ids did not change.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { AgentKeys } from "../../src/agent/keys.js";
import { generateKey, Keyring } from "../../src/control/gossip/keyring.js";

describe("AgentKeys.reload", () => {
  it("logs the keys reloaded, then a listener that threw, never 'not reloaded'; the same key ids again tell no listener", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-agentkeys-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "key");
    const write = (keys: Uint8Array[]) =>
      writeFileSync(file, `${keys.map((k) => Buffer.from(k).toString("base64")).join("\n")}\n`, { mode: 0o600 });
    const [k1, k2] = [generateKey(), generateKey()];
    write([k1]);
    const logged: Array<{ code?: string; msg: string }> = [];
    const keys = new AgentKeys(
      file,
      pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) }),
    );
    const ring = await keys.load();
    let told = 0;
    ring.onReplaced(() => {
      told++;
      throw new Error("listener broke");
    });
    const reloaded = async (n: number) => {
      keys.reload();
      await vi.waitFor(() => expect(logged.filter((l) => l.code === "AGENT_KEYS_RELOADED")).toHaveLength(n));
    };
    write([k2, k1]);
    await reloaded(1);
    expect(ring.ids()).toEqual(new Keyring(k2, [k1]).ids());
    expect(told).toBe(1);
    expect(logged.map((l) => l.code)).toEqual(["AGENT_KEYS_RELOADED", "AGENT_KEYS_LISTENER_FAILED"]);
    expect(logged.some((l) => l.msg.includes("not reloaded"))).toBe(false);
    // The file as it was: reloaded, no listener told.
    await reloaded(2);
    expect(told).toBe(1);
    expect(logged.map((l) => l.code)).toEqual([
      "AGENT_KEYS_RELOADED",
      "AGENT_KEYS_LISTENER_FAILED",
      "AGENT_KEYS_RELOADED",
    ]);
  });
});
