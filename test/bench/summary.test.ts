// The pure parts of `weft bench`: settings, medians and ratios, percentiles, the chart's markup.
import { describe, expect, it } from "vitest";
import { chartSvg } from "../../src/bench/chart.js";
import { resolveSettings } from "../../src/bench/settings.js";
import { median, pairedRatio, percentile } from "../../src/bench/stats.js";
import { figureDefs, summarize } from "../../src/bench/summary.js";
import { figureRow } from "../../src/bench/table.js";
import type { FailedRun, Sample, Workload } from "../../src/bench/workloads.js";

const sample = (setup: string, round: number, gbps: number): Sample => ({
  setup,
  workload: "tcp-1",
  round,
  seq: round,
  startedAt: "",
  values: { gbps, cpuAgents: 0, cpuKernel: 1, cpuTotal: 1 },
  raw: {},
});

describe("bench settings", () => {
  it("needs the baseline, puts it first, and lets --quick shrink only what was not given", () => {
    expect(() => resolveSettings({ backends: ["udp"] })).toThrow(
      expect.objectContaining({ code: "BENCH_NO_BASELINE" }),
    );
    expect(() => resolveSettings({ backends: ["vxlan", "nope"] })).toThrow(
      expect.objectContaining({ code: "BENCH_BAD_BACKEND" }),
    );
    expect(() => resolveSettings({ duration: 0 })).toThrow(expect.objectContaining({ code: "BENCH_BAD_SETTING" }));
    const s = resolveSettings(
      { backends: ["udp", "vxlan"], quick: true, rounds: 2 },
      new Date("2025-01-02T03:04:05.678Z"),
    );
    expect(s).toMatchObject({
      backends: ["vxlan", "udp"],
      duration: 1,
      rounds: 2,
      streams: [1, 4],
      out: `bench/results/2025-01-02T03-04-05.678Z-${process.pid}`,
    });
    expect(resolveSettings({})).toMatchObject({
      backends: ["vxlan", "host-gw", "wasm-vxlan", "udp"],
      duration: 10,
      rounds: 3,
    });
  });

  it("gives runs started in the same second report directories of their own, sorted by start time", () => {
    const out = (iso: string, pid: number) => resolveSettings({}, new Date(iso), pid).out;
    const names = [
      out("2025-01-02T03:04:05.678Z", 200),
      out("2025-01-02T03:04:05.678Z", 100),
      out("2025-01-02T03:04:05.009Z", 300),
      out("2025-01-02T03:04:06.001Z", 50),
    ];
    expect(new Set(names).size).toBe(4);
    expect([...names].sort()).toEqual([names[2], names[1], names[0], names[3]]);
    expect(resolveSettings({ out: "/tmp/r" }).out).toBe("/tmp/r");
  });

  it("makes one setup per backend, the userspace ones once per --offloads setting, named so", () => {
    const names = (offloads?: string[]) =>
      resolveSettings({ backends: ["vxlan", "host-gw", "wasm-vxlan", "udp"], offloads }).setups.map((s) => s.name);
    // Offloads on is the default: the names are the backends', as before --offloads existed.
    expect(names()).toEqual(["vxlan", "host-gw", "wasm-vxlan", "udp"]);
    expect(names(["on"])).toEqual(["vxlan", "host-gw", "wasm-vxlan", "udp"]);
    expect(names(["off"])).toEqual(["vxlan", "host-gw", "wasm-vxlan (offloads off)", "udp (offloads off)"]);
    // A backend's setups side by side, on first whatever the order given.
    expect(names(["off", "on", "off"])).toEqual([
      "vxlan",
      "host-gw",
      "wasm-vxlan",
      "wasm-vxlan (offloads off)",
      "udp",
      "udp (offloads off)",
    ]);
    const s = resolveSettings({ backends: ["wasm-vxlan", "vxlan"], offloads: ["on", "off"] });
    expect(s).toMatchObject({ backends: ["vxlan", "wasm-vxlan"], offloads: ["on", "off"] });
    expect(s.setups).toEqual([
      { name: "vxlan", backend: "vxlan" },
      { name: "wasm-vxlan", backend: "wasm-vxlan", offloads: true },
      { name: "wasm-vxlan (offloads off)", backend: "wasm-vxlan", offloads: false },
    ]);
    const bad = expect.objectContaining({ code: "BENCH_BAD_SETTING" });
    expect(() => resolveSettings({ offloads: ["yes"] })).toThrow(bad);
    expect(() => resolveSettings({ offloads: [] })).toThrow(bad);
    // Off would change nothing without a userspace backend: the run would not be what was asked.
    expect(() => resolveSettings({ backends: ["vxlan", "host-gw"], offloads: ["on", "off"] })).toThrow(bad);
    expect(resolveSettings({ backends: ["vxlan", "host-gw"], offloads: ["on"] }).setups.map((x) => x.name)).toEqual([
      "vxlan",
      "host-gw",
    ]);
  });
});

describe("bench summary", () => {
  it("takes medians over rounds and divides by the baseline's median", () => {
    const defs = figureDefs([{ kind: "tcp", streams: 1 }]);
    const samples = [
      sample("vxlan", 1, 10),
      sample("vxlan", 2, 30),
      sample("vxlan", 3, 20),
      sample("udp", 1, 1),
      sample("udp", 2, 5),
      sample("udp", 3, 2),
    ];
    const [tcp, , agents] = summarize(defs, ["vxlan", "udp"], samples);
    expect(tcp).toMatchObject({ id: "tcp-1.gbps", medians: { vxlan: 20, udp: 2 }, ratios: { vxlan: 1, udp: 0.1 } });
    // A zero baseline gives no ratio rather than Infinity.
    expect(agents).toMatchObject({ id: "tcp-1.cpuAgents", mayBeZero: true, ratios: {} });
  });

  it("shows the ratio paired by round, the median of the rounds' own ratios, beside the ratio of medians", () => {
    const defs = figureDefs([{ kind: "tcp", streams: 1 }]);
    // Round 3 is slow for udp alone; rounds 1 and 2 drift for both alike: equal in two rounds of three.
    const rounds = (setup: string, gbps: number[]) => gbps.map((g, i) => sample(setup, i + 1, g));
    const [tcp] = summarize(defs, ["vxlan", "udp"], [...rounds("vxlan", [10, 20, 40]), ...rounds("udp", [10, 20, 4])]);
    expect(tcp).toMatchObject({ medians: { vxlan: 20, udp: 10 }, ratios: { udp: 0.5 }, pairedRatios: { udp: 1 } });
    expect(figureRow(tcp, ["vxlan", "udp"]).slice(3)).toEqual(["20.0", "10.0 (1.00x)"]);
    // A round the baseline did not run pairs with nothing.
    const [lone] = summarize(defs, ["vxlan", "udp"], [sample("vxlan", 1, 10), sample("udp", 2, 5)]);
    expect(lone.pairedRatios).toEqual({ vxlan: 1 });
  });

  it("pairs at least half the rounds, says over how many, and gives a figure that may be 0 no ratio to a 0 median", () => {
    const defs = figureDefs([{ kind: "udp", payload: 1400 }]);
    const at = (setup: string, round: number, lossPercent: number, receivedKpps: number): Sample => ({
      setup,
      workload: "udp-1400",
      round,
      seq: round,
      startedAt: "",
      values: { sentKpps: 100, receivedKpps, lossPercent },
      raw: {},
    });
    // Kernel vxlan lost nothing in two rounds of three: its median loss is 0, so no ratio, not
    // udp's round 3 alone (6 / 0.2 = 30x).
    const samples = [at("vxlan", 1, 0, 100), at("vxlan", 2, 0, 100), at("vxlan", 3, 0.2, 100)];
    samples.push(at("udp", 1, 5, 50), at("udp", 2, 4, 40), at("udp", 3, 6, 60));
    const [, received, loss] = summarize(defs, ["vxlan", "udp"], samples);
    expect(loss.pairedRatios).toEqual({});
    expect(figureRow(loss, ["vxlan", "udp"]).slice(3)).toEqual(["0", "5.00 (n/a)"]);
    expect(figureRow(received, ["vxlan", "udp"]).slice(3)).toEqual(["100", "50.0 (0.50x)"]);
    // Two rounds of three paired (udp's round 3 failed): said; one of three: no ratio.
    const two = summarize(defs, ["vxlan", "udp"], samples.slice(0, 5))[1];
    expect(figureRow(two, ["vxlan", "udp"]).slice(3)).toEqual(["100", "45.0 (0.45x, 2 of 3 rounds)"]);
    const one = summarize(defs, ["vxlan", "udp"], samples.slice(0, 4))[1];
    expect(one.pairedRatios).toEqual({ vxlan: 1 });
    expect(figureRow(one, ["vxlan", "udp"]).slice(3)).toEqual(["100", "50.0 (n/a)"]);
    // Idle cost runs once, after all three rounds of traffic: paired over its own one round.
    const [idle] = summarize(
      figureDefs([{ kind: "idle" }]),
      ["vxlan", "udp"],
      [
        ...samples,
        { ...at("vxlan", 1, 0, 0), workload: "idle", values: { cpuPercent: 0.5 } },
        { ...at("udp", 1, 0, 0), workload: "idle", values: { cpuPercent: 0.4 } },
      ],
    );
    expect(idle.pairedRatios).toEqual({ vxlan: 1, udp: 0.8 });
    expect(idle.rounds).toBe(1);
  });

  it("counts failed runs per setup, takes medians over the others, and says so in the cell", () => {
    const defs = figureDefs([{ kind: "tcp", streams: 1 }, { kind: "rtt" }]);
    const failed = (setup: string, workload: string, round: number): FailedRun => ({
      setup,
      workload,
      label: workload,
      round,
      seq: 0,
      startedAt: "",
      code: "LAB_IPERF_NO_RESULT",
      message: "stalled",
    });
    const samples = [sample("vxlan", 1, 10), sample("vxlan", 2, 30), sample("udp", 1, 1), sample("udp", 3, 3)];
    const failures = [failed("udp", "tcp-1", 2), failed("vxlan", "tcp-1", 3), failed("udp", "rtt", 1)];
    const [tcp, rttP50] = summarize(defs, ["vxlan", "udp"], samples, failures);
    expect(tcp).toMatchObject({ medians: { vxlan: 20, udp: 2 }, ratios: { udp: 0.1 }, failed: { vxlan: 1, udp: 1 } });
    // Only round 1 has both, one of three: no ratio.
    expect(figureRow(tcp, ["vxlan", "udp"]).slice(3)).toEqual(["20.0 (1 failed)", "2.00 (n/a, 1 failed)"]);
    // Every run failed: no median, and the cell says why.
    expect(rttP50).toMatchObject({ id: "rtt.p50", medians: {}, failed: { udp: 1 } });
    expect(figureRow(rttP50, ["vxlan", "udp"]).slice(3)).toEqual(["-", "- (n/a, 1 failed)"]);
    // Without failures a cell is as before.
    const [clean] = summarize(defs, ["vxlan", "udp"], samples);
    expect(clean.failed).toEqual({});
    expect(figureRow(clean, ["vxlan", "udp"]).slice(3)).toEqual(["20.0", "2.00 (n/a)"]);
  });

  it("marks the chart's bars of setups whose runs failed, as the table's cells", () => {
    const defs = figureDefs([{ kind: "tcp", streams: 1 }, { kind: "flood-tail" }, { kind: "rtt" }]);
    const failed = (setup: string, workload: string): FailedRun => ({
      setup,
      workload,
      label: workload,
      round: 2,
      seq: 0,
      startedAt: "",
      code: "LAB_IPERF_NO_RESULT",
      message: "stalled",
    });
    const tail = (setup: string, tailMs: number): Sample => ({
      setup,
      workload: "flood-tail",
      round: 1,
      seq: 0,
      startedAt: "",
      values: {
        floodTailMs: tailMs,
        floodDelayP50Ms: 0.5,
        floodDelayP99Ms: 1,
        floodReceivedKpps: 10,
        floodLossPercent: 0,
      },
      raw: {},
    });
    const samples = [sample("vxlan", 1, 20), sample("udp", 1, 2), tail("vxlan", 0), tail("udp", 3)];
    const failures = [
      failed("udp", "tcp-1"),
      failed("udp", "tcp-1"),
      failed("vxlan", "tcp-1"),
      failed("udp", "flood-tail"),
      failed("udp", "rtt"),
    ];
    const { setups } = resolveSettings({ backends: ["vxlan", "udp"] });
    const figures = summarize(defs, ["vxlan", "udp"], samples, failures);
    const svg = chartSvg(figures, setups, "t");
    const note = (n: number) => `<tspan fill="#c44e52"> (${n} failed)</tspan>`;
    expect(svg).toContain(`0.10x  2.00 Gbit/s${note(2)}</text>`);
    expect(svg).toContain(`<tspan fill="#c44e52">, vxlan: 1 failed</tspan></text>`);
    expect(svg).toContain(`>3.00 ms  udp${note(1)}</text>`);
    expect(svg).toContain(">0 ms  vxlan</text>");
    // A figure of which every run failed (and the baseline had none) is still listed, as n/a.
    const rtt = figures.find((f) => f.id === "rtt.p50")!;
    expect(rtt.medians).toEqual({});
    expect(svg).toContain(`>${rtt.label} (lower is better)</text>`);
    expect(svg).toContain(`>n/a${note(1)}</text>`);
    // Without failures, no note anywhere.
    expect(chartSvg(summarize(defs, ["vxlan", "udp"], samples), setups, "t")).not.toContain("failed");
  });

  it("has one median (mean of the middle two) and one percentile rule (nearest rank), in any order", () => {
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([])).toBeNaN();
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5)).toBe(5);
    expect(percentile([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 0.99)).toBe(10);
    // Of 400 replies, p99 is the 396th fastest: an observed value, not interpolated.
    const rtts = Array.from({ length: 400 }, (_, i) => 400 - i);
    expect(percentile(rtts, 0.99)).toBe(396);
    expect(percentile(rtts, 0)).toBe(1);
    expect(percentile([], 0.5)).toBeNaN();
  });

  it("reads an interleaved A/B by the rounds' own ratios, skipping a round either side failed", () => {
    // Round 2 is slow for both (drift): its ratio still counts as any other's.
    const a = [10, 5, 10, undefined, 10];
    const b = [8, 6, 9, 1, 12];
    expect(pairedRatio(a, b)).toEqual({ median: (1.2 + 0.9) / 2, lower: 2, rounds: 4 });
    expect(pairedRatio([1, 2], [undefined, undefined])).toEqual({ median: NaN, lower: 0, rounds: 0 });
    // A zero or missing A gives no ratio.
    expect(pairedRatio([0, 4], [1, 2])).toEqual({ median: 0.5, lower: 1, rounds: 1 });
  });

  it("charts every ratio as a bar, escaped, without anything external", () => {
    const workloads: Workload[] = [{ kind: "tcp", streams: 1 }, { kind: "rtt" }];
    const samples = [sample("vxlan", 1, 8), sample("wasm-vxlan", 1, 2), sample("wasm-vxlan (offloads off)", 1, 1)];
    const { setups } = resolveSettings({ backends: ["vxlan", "wasm-vxlan"], offloads: ["on", "off"] });
    const svg = chartSvg(
      summarize(
        figureDefs(workloads),
        setups.map((s) => s.name),
        samples,
      ),
      setups,
      "a <title> & more",
    );
    expect(svg).toContain("a &lt;title&gt; &amp; more");
    expect(svg).toContain("0.25x");
    expect(svg).toContain("0.13x");
    expect(svg).not.toMatch(/href|<script|@import|url\(/);
    // The setup without offloads: its backend's colour, lighter, outlined in the full colour.
    expect(svg).toContain(`fill="#eec2a9" stroke="#dd8452"`);
    expect(svg).toContain(">wasm-vxlan (offloads off)</text>");
  });

  it("charts the figures without a ratio (flood tail, idle cost) as absolute values of every setup", () => {
    const workloads: Workload[] = [{ kind: "flood-tail" }, { kind: "idle" }];
    const at = (setup: string, workload: string, values: Record<string, number>): Sample => ({
      setup,
      workload,
      round: 1,
      seq: 0,
      startedAt: "",
      values,
      raw: {},
    });
    const samples = [
      at("vxlan", "flood-tail", {
        floodTailMs: 0,
        floodDelayP50Ms: 0.2,
        floodDelayP99Ms: 0.5,
        floodReceivedKpps: 40,
        floodLossPercent: 0,
      }),
      at("udp", "flood-tail", {
        floodTailMs: 7.25,
        floodDelayP50Ms: 5,
        floodDelayP99Ms: 20,
        floodReceivedKpps: 10,
        floodLossPercent: 3,
      }),
      at("vxlan", "idle", { cpuPercent: 0.04 }),
      at("udp", "idle", { cpuPercent: 0.2 }),
    ];
    const { setups } = resolveSettings({ backends: ["vxlan", "udp"] });
    const figures = summarize(
      figureDefs(workloads),
      setups.map((s) => s.name),
      samples,
    );
    // Kernel vxlan's tail of 0 gives no ratio: without this section the figure would be missing.
    expect(figures.find((f) => f.id === "flood-tail.floodTailMs")!.ratios).toEqual({});
    const svg = chartSvg(figures, setups, "t");
    expect(svg).toContain("absolute medians");
    expect(svg).toContain(">flood tail: oldest of its own delivered after its stop (lower is better)</text>");
    expect(svg).toContain(">7.25 ms  udp</text>");
    expect(svg).toContain(">0 ms  vxlan</text>");
    expect(svg).toContain(">idle cost, per agent (lower is better)</text>");
    expect(svg).toContain(">0.200 % core  udp</text>");
    // The largest value of a figure is the full length; the others in proportion.
    expect(svg).toMatch(/<rect x="280" y="\d+" width="480" [^>]*><title>udp: 0.200 % core<\/title>/);
    expect(svg).toMatch(/<rect x="280" y="\d+" width="96" [^>]*><title>vxlan: 0.0400 % core<\/title>/);
    // Figures with a ratio stay in the ratio section only.
    expect(svg.match(/flood one-way delay p99/g)).toHaveLength(1);
  });
});
