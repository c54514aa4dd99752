// What Ctrl-C meets in `weft bench` besides a running tool: a setup whose IPv6 sibling lab is
// still being built when its teardown begins (that teardown cannot see it, so buildLab removes it
// as soon as it exists), and the idle-cost window (which ends at once instead of running out).
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { idleCost } from "../../src/bench/load.js";
import { type BenchLab, buildLab, teardownLab } from "../../src/bench/topology.js";
import { canUseNetns } from "../support/netns.js";

/** This process's namespaces of the vxlan setup's IPv6 lab (topology.ts names them weft-bench-vx-6-...). */
const siblingNamespaces = () =>
  execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(`weft-bench-vx-6-h`) && name.includes(`-${process.pid}-`));

describe.skipIf(!canUseNetns())("weft bench on an interrupt", () => {
  it("removes an IPv6 sibling lab whose setup's teardown began while it was being built", async () => {
    const labs: BenchLab[] = [];
    const building = buildLab({ name: "vxlan", backend: "vxlan" }, labs, true);
    let entry: BenchLab | undefined;
    try {
      // As Ctrl-C's cleanup does: tear down the lab as soon as it exists (its sibling is being built then).
      while (labs.length === 0) await Promise.race([building, new Promise((r) => setTimeout(r, 5))]);
      const teardown = teardownLab(labs[0]);
      entry = await building;
      await teardown;
      expect(entry.ipv6).toBeUndefined();
      expect(siblingNamespaces()).toEqual([]);
    } finally {
      if (entry?.ipv6) await teardownLab(entry.ipv6);
    }
  }, 60_000);

  it("ends the idle-cost window as soon as the run is aborted", async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 100);
    await expect(idleCost([{ pids: [process.pid] }], 60, abort.signal)).rejects.toMatchObject({ name: "AbortError" });
  }, 10_000);
});
