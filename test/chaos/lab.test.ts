// A chaos lab closes once: the Ctrl-C handler and the scenario's own teardown both close it, and
// whichever comes second must wait for the first, or the runner would go on (open the next
// scenario's lab, exit) while the first is still being removed.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ChaosLab } from "../../src/lab/chaos/lab.js";
import { SHORT } from "../../src/lab/chaos/run.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("chaos lab", () => {
  it("a second close() resolves only once everything is removed", async () => {
    const c = await ChaosLab.open(2, 1, SHORT.bounds);
    const names = [c.lab.switchNs.name, ...c.lab.hosts.map((h) => h.ns.name)];
    const first = c.close();
    await c.close();
    const listed = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    expect(names.filter((n) => listed.includes(n))).toEqual([]);
    expect(existsSync(c.agents.dir)).toBe(false);
    expect(existsSync(c.lab.workDir)).toBe(false);
    await first;
  }, 60_000);
});
