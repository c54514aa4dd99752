// The short chaos suite (`npm run chaos -- --short` runs the same): real agents in namespaces,
// each scenario in a lab of its own, the monitor checking every second that no two running
// agents hold the same subnet (in /status, subnet.env, peers or routes), that routes to stopped
// agents go, that a restarted agent keeps its subnet and VTEP MAC, that the cluster converges
// and pods reach each other after the fault ends, and that a stop leaves the kernel clean — in
// each family for the dual-stack kill -9 scenario (IPv6 subnets, routes and pod pings too). It
// asserts those invariants with generous time bounds, never speed; the full suite's figures
// come from `npm run chaos`.
import { describe, expect, it } from "vitest";
import { runScenario, SHORT } from "../../src/lab/chaos/run.js";
import { shortScenarios } from "../../src/lab/chaos/scenarios.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("chaos (short): real agents under faults", () => {
  for (const sc of shortScenarios()) {
    it(sc.name, async () => {
      const r = await runScenario(sc, SHORT);
      expect(r.error).toBeUndefined();
      // False deaths are a figure (a loaded machine can starve an agent); everything else is an invariant.
      expect(r.violations.filter((v) => v.kind !== "false-death").map((v) => `${v.kind}: ${v.detail}`)).toEqual([]);
    }, 180_000);
  }
});
