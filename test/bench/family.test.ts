// `weft bench --family`: which families the run measures, which setups get IPv6 TCP runs, and the
// rows those runs make (the pure parts; bench.test.ts runs it end to end).
import { describe, expect, it } from "vitest";
import { resolveSettings, runsIpv6 } from "../../src/bench/settings.js";
import { figureDefs } from "../../src/bench/summary.js";
import { workloadId, workloadLabel } from "../../src/bench/workloads.js";

describe("bench --family", () => {
  it("takes 4 (the default) or 4,6; IPv6 runs go to the setups whose backend carries IPv6", () => {
    expect(resolveSettings({}).families).toEqual([4]);
    const s = resolveSettings({ family: ["6", "4"], backends: ["vxlan", "host-gw", "wasm-vxlan", "udp"] });
    expect(s.families).toEqual([4, 6]);
    expect(s.setups.filter((x) => runsIpv6(s, x)).map((x) => x.name)).toEqual(["vxlan", "host-gw", "wasm-vxlan"]);
    expect(resolveSettings({}).setups.filter((x) => runsIpv6(resolveSettings({}), x))).toEqual([]);
    const bad = expect.objectContaining({
      code: "BENCH_BAD_SETTING",
      message: expect.stringContaining("--family takes 4 or 4,6"),
    });
    for (const family of [["6"], ["4", "5"], [], ["ipv6"]]) expect(() => resolveSettings({ family })).toThrow(bad);
  });

  it("an IPv6 TCP run is a row of its own beside IPv4's, with its CPU cost rows", () => {
    const w = { kind: "tcp" as const, streams: 1, family: 6 as const };
    expect(workloadId(w)).toBe("tcp6-1");
    expect(workloadLabel(w)).toBe("TCP 1 stream over IPv6");
    const ids = figureDefs([{ kind: "tcp", streams: 1 }, w]).map((f) => f.id);
    expect(ids).toEqual([
      "tcp-1.gbps",
      "tcp6-1.gbps",
      "tcp-1.cpuTotal",
      "tcp-1.cpuAgents",
      "tcp-1.cpuKernel",
      "tcp6-1.cpuTotal",
      "tcp6-1.cpuAgents",
      "tcp6-1.cpuKernel",
    ]);
  });
});
