// The pure parts of `weft bench`: settings, medians and ratios, percentiles, the chart's markup.
import { describe, expect, it } from "vitest";
import { chartSvg } from "../../src/bench/chart.js";
import { resolveSettings } from "../../src/bench/settings.js";
import { figureDefs, median, summarize } from "../../src/bench/summary.js";
import { percentile, type Sample, type Workload } from "../../src/bench/workloads.js";

const sample = (backend: Sample["backend"], round: number, gbps: number): Sample => ({
  backend, workload: "tcp-1", round, seq: round, startedAt: "", values: { gbps, cpuAgents: 0, cpuKernel: 1, cpuTotal: 1 }, raw: {},
});

describe("bench settings", () => {
  it("needs the baseline, puts it first, and lets --quick shrink only what was not given", () => {
    expect(() => resolveSettings({ backends: ["udp"] })).toThrow(expect.objectContaining({ code: "BENCH_NO_BASELINE" }));
    expect(() => resolveSettings({ backends: ["vxlan", "nope"] })).toThrow(expect.objectContaining({ code: "BENCH_BAD_BACKEND" }));
    expect(() => resolveSettings({ duration: 0 })).toThrow(expect.objectContaining({ code: "BENCH_BAD_SETTING" }));
    const s = resolveSettings({ backends: ["udp", "vxlan"], quick: true, rounds: 2 }, new Date("2025-01-02T03:04:05.678Z"));
    expect(s).toMatchObject({ backends: ["vxlan", "udp"], duration: 1, rounds: 2, streams: [1, 4], out: "bench/results/2025-01-02T03-04-05Z" });
    expect(resolveSettings({})).toMatchObject({ backends: ["vxlan", "host-gw", "wasm-vxlan", "udp"], duration: 10, rounds: 3 });
  });
});

describe("bench summary", () => {
  it("takes medians over rounds and divides by the baseline's median", () => {
    const defs = figureDefs([{ kind: "tcp", streams: 1 }]);
    const samples = [sample("vxlan", 1, 10), sample("vxlan", 2, 30), sample("vxlan", 3, 20), sample("udp", 1, 1), sample("udp", 2, 5), sample("udp", 3, 2)];
    const [tcp, , agents] = summarize(defs, ["vxlan", "udp"], samples);
    expect(tcp).toMatchObject({ id: "tcp-1.gbps", medians: { vxlan: 20, udp: 2 }, ratios: { vxlan: 1, udp: 0.1 } });
    // A zero baseline gives no ratio rather than Infinity.
    expect(agents).toMatchObject({ id: "tcp-1.cpuAgents", mayBeZero: true, ratios: {} });
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5)).toBe(5);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99)).toBe(10);
  });

  it("charts every ratio as a bar, escaped, without anything external", () => {
    const workloads: Workload[] = [{ kind: "tcp", streams: 1 }, { kind: "rtt" }];
    const samples = [sample("vxlan", 1, 8), sample("wasm-vxlan", 1, 2)];
    const svg = chartSvg(summarize(figureDefs(workloads), ["vxlan", "wasm-vxlan"], samples), ["vxlan", "wasm-vxlan"], "a <title> & more");
    expect(svg).toContain("a &lt;title&gt; &amp; more");
    expect(svg).toContain("0.25x");
    expect(svg).not.toMatch(/href|<script|@import|url\(/);
  });
});
