// A chaos lab closes once: the Ctrl-C handler and the scenario's own teardown both close it, and
// whichever comes second must wait for the first, or the runner would go on (open the next
// scenario's lab, exit) while the first is still being removed. Its tmpfs for a state dir is
// never mounted where the suite runs: it goes with the lab, also after a kill -9.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
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

  it("a state dir tmpfs is mounted outside this process's mount namespace, filled within its size, gone at close", async () => {
    const c = await ChaosLab.open(1, 1, SHORT.bounds);
    const dir = join(c.all[0].dir, "state");
    let path = "";
    try {
      const t = await c.tmpfs(c.all[0].host, dir, 1 << 20);
      path = t.path;
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(dir);
      await t.fill("filler");
      const size = statSync(join(path, "filler")).size;
      expect(size).toBeGreaterThan(0);
      expect(size).toBeLessThanOrEqual(1 << 20);
      expect(existsSync(join(dir, "filler"))).toBe(false);
    } finally {
      await c.close();
    }
    expect(existsSync(path)).toBe(false);
  }, 60_000);
});
