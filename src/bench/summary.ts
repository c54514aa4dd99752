// From raw samples to the figures a report shows: the median over rounds of each value, per
// setup (see settings.ts), and its ratio to kernel vxlan from the same run, paired by round (the
// median of the rounds' own ratios) and, in report.json, also as the ratio of the two medians.
import { BASELINE } from "./settings.js";
import { median, shownPairedRatio } from "./stats.js";
import { workloadId, workloadLabel, type FailedRun, type Sample, type Workload } from "./workloads.js";

export interface FigureDef {
  /** Stable id, e.g. "tcp-4.gbps". */
  id: string;
  label: string;
  unit: string;
  better: "higher" | "lower";
  /** Zero is a real outcome (no loss; no agent CPU for kernel backends), not a missing figure. */
  mayBeZero: boolean;
  workload: string;
  value: string;
}

export interface Figure extends FigureDef {
  /** Median over rounds, per setup name. */
  medians: Record<string, number>;
  /** Median / baseline median, per setup name; absent when the baseline is 0. */
  ratios: Record<string, number>;
  /**
   * The median over rounds of the round's value / the baseline's value in that round (stats.ts
   * pairedRatio: drift between rounds cancels), per setup name: what the report shows; absent
   * where stats.ts shownPairedRatio shows none (fewer than half the rounds paired; a figure that
   * may be zero against a baseline median of 0).
   */
  pairedRatios: Record<string, number>;
  /** Per setup with a paired ratio, how many rounds it is over (of `rounds`). */
  pairedRounds: Record<string, number>;
  /** Rounds in the run (of any setup and workload). */
  rounds: number;
  /** Runs of the figure's workload that failed, per setup name; absent when none did. */
  failed: Record<string, number>;
}

/** Every figure the workloads produce, in report order. */
export function figureDefs(workloads: Workload[]): FigureDef[] {
  const defs: FigureDef[] = [];
  const add = (
    w: Workload,
    value: string,
    label: string,
    unit: string,
    better: "higher" | "lower",
    mayBeZero = false,
  ) => defs.push({ id: `${workloadId(w)}.${value}`, label, unit, better, mayBeZero, workload: workloadId(w), value });
  for (const w of workloads) {
    const name = workloadLabel(w);
    if (w.kind === "tcp") add(w, "gbps", `${name} throughput`, "Gbit/s", "higher");
    if (w.kind === "udp") {
      add(w, "sentKpps", `${name} sent`, "kpps", "higher");
      add(w, "receivedKpps", `${name} received`, "kpps", "higher");
      add(w, "lossPercent", `${name} loss`, "%", "lower", true);
    }
    if (w.kind === "rtt") {
      add(w, "p50", "round trip p50", "ms", "lower");
      add(w, "p99", "round trip p99", "ms", "lower");
    }
    if (w.kind === "loaded-rtt") {
      add(w, "p50", "ping under load p50", "ms", "lower");
      add(w, "p99", "ping under load p99", "ms", "lower");
      add(w, "lossPercent", "ping under load loss", "%", "lower", true);
    }
    if (w.kind === "flood-tail") {
      add(w, "floodTailMs", "flood tail: oldest of its own delivered after its stop", "ms", "lower", true);
      // Delays near 0 on an idle fast path: charted as absolute values, as loss.
      add(w, "floodDelayP50Ms", "flood one-way delay p50", "ms", "lower", true);
      add(w, "floodDelayP99Ms", "flood one-way delay p99", "ms", "lower", true);
      add(w, "floodSentKpps", "flood sent", "kpps", "higher");
      add(w, "floodReceivedKpps", "flood received", "kpps", "higher");
      add(w, "floodLossPercent", "flood loss", "%", "lower", true);
      add(w, "floodReceiverDropPercent", "flood loss at the receiving socket", "%", "lower", true);
    }
    if (w.kind === "idle") add(w, "cpuPercent", "idle cost, per agent", "% core", "lower", true);
  }
  for (const w of workloads.filter((x) => x.kind === "tcp")) {
    const name = workloadLabel(w);
    add(w, "cpuTotal", `${name} CPU total`, "s/GB", "lower");
    add(w, "cpuAgents", `${name} CPU agents`, "s/GB", "lower", true);
    add(w, "cpuKernel", `${name} CPU kernel`, "s/GB", "lower");
  }
  return defs;
}

/** `setups`: the setups' names; `failures`: the runs that failed (medians are over the others). */
export function summarize(
  defs: FigureDef[],
  setups: string[],
  samples: Sample[],
  failures: FailedRun[] = [],
): Figure[] {
  return defs.map((d) => {
    const failed: Figure["failed"] = {};
    for (const f of failures) if (f.workload === d.workload) failed[f.setup] = (failed[f.setup] ?? 0) + 1;
    const medians: Figure["medians"] = {};
    // Per setup, its value in each round this workload ran in (undefined where that run failed):
    // idle cost runs once, after every round of traffic, so it is paired over that one round.
    const ran = [...samples, ...failures].filter((s) => s.workload === d.workload);
    const rounds = [...new Set(ran.map((s) => s.round))].sort((a, b) => a - b);
    const byRound: Record<string, Array<number | undefined>> = {};
    for (const b of setups) {
      const mine = samples.filter((s) => s.setup === b && s.workload === d.workload);
      const xs = mine.map((s) => s.values[d.value]);
      if (xs.length) medians[b] = median(xs);
      byRound[b] = rounds.map((r) => mine.find((s) => s.round === r)?.values[d.value]);
    }
    const base = medians[BASELINE];
    const ratios: Figure["ratios"] = {};
    const pairedRatios: Figure["pairedRatios"] = {};
    const pairedRounds: Figure["pairedRounds"] = {};
    for (const b of setups) {
      const m = medians[b];
      if (m !== undefined && base !== undefined && base > 0) ratios[b] = m / base;
      const paired = byRound[BASELINE] && shownPairedRatio(byRound[BASELINE], byRound[b], d.mayBeZero);
      if (paired) {
        pairedRatios[b] = paired.median;
        pairedRounds[b] = paired.rounds;
      }
    }
    return { ...d, medians, ratios, pairedRatios, pairedRounds, rounds: rounds.length, failed };
  });
}
