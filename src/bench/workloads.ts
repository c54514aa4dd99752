// The workloads `weft bench` runs on every setup, pod to pod (host1's pod is the client, host2's
// the server): TCP throughput, UDP packet rates, round-trip latency. Each run yields one sample of
// named values; the TCP runs also carry their CPU cost per gigabyte (src/bench/cpu.ts).
import { WeftError } from "../errors.js";
import { type IperfResult, iperf, ping, type PingResult } from "../lab/traffic.js";
import { cpuPerGigabyte, measureCpu } from "./cpu.js";
import { floodTail, pingUnderLoad } from "./load.js";
import { percentile } from "./stats.js";
import { agentPids, type BenchLab } from "./topology.js";

/**
 * `loaded-rtt`: pings while a TCP stream and a UDP flood run; `flood-tail`: a timestamped flood
 * and what is still delivered after it stops; `idle`: the agents' CPU without traffic (measured
 * once for all setups at the same time, not per round: see run.ts).
 */
export type Workload =
  | { kind: "tcp"; streams: number; family?: 6 }
  | { kind: "udp"; payload: number }
  | { kind: "rtt" }
  | { kind: "loaded-rtt" }
  | { kind: "flood-tail" }
  | { kind: "idle" };

/** The workloads run on one lab at a time, round by round (idle cost is measured for all at once). */
export type LabWorkload = Exclude<Workload, { kind: "idle" }>;

export function workloadId(w: Workload): string {
  return w.kind === "tcp"
    ? `tcp${w.family === 6 ? "6" : ""}-${w.streams}`
    : w.kind === "udp"
      ? `udp-${w.payload}`
      : w.kind;
}

export function workloadLabel(w: Workload): string {
  if (w.kind === "tcp")
    return `TCP ${w.streams} stream${w.streams === 1 ? "" : "s"}${w.family === 6 ? " over IPv6" : ""}`;
  if (w.kind === "udp") return `UDP ${w.payload} B`;
  return { rtt: "ping", "loaded-rtt": "ping under load", "flood-tail": "flood tail", idle: "idle cost" }[w.kind];
}

export interface WorkloadSettings {
  /** Seconds per iperf3 run. */
  duration: number;
  pingCount: number;
  pingIntervalS: number;
}

/** One run of one workload on one setup: its figures and what they were computed from. */
export interface Sample {
  /** The setup's name (settings.ts). */
  setup: string;
  workload: string;
  round: number;
  /** Position in the whole run (0, 1, ...), to see drift. */
  seq: number;
  startedAt: string;
  values: Record<string, number>;
  /** Raw measurements: iperf3's totals, CPU deltas, every round-trip time. */
  raw: Record<string, unknown>;
}

export type SampleFigures = Pick<Sample, "values" | "raw">;

/** A run of one workload on one setup that failed (a stalled path, a tool gone): reported, not
 *  measured; the run goes on, and that cell's median is over the rounds that did run. */
export interface FailedRun {
  setup: string;
  workload: string;
  /** The workload as the report names it (workloadLabel). */
  label: string;
  round: number;
  seq: number;
  startedAt: string;
  /** The WeftError's code (anything else ends the run instead). */
  code: string;
  message: string;
  /** The error's detail, when it has one (a stall's sockets and iperf3's output). */
  detail?: string;
}

/** How an iperf3 beside the flood ends when its path stalls: no result, or its own timeouts' error. */
const STALLS = new Set(["LAB_IPERF_NO_RESULT", "LAB_IPERF_TIMED_OUT", "LAB_TRAFFIC_TOOL_FAILED"]);

/**
 * Runs measured once more after a failure (`weft bench` and bench:e2e): only ping under load's
 * iperf3 ending in a stall (without a result, or timed out by --snd-timeout or --connect-timeout).
 */
export function retryable(kind: Workload["kind"], code: string): boolean {
  return kind === "loaded-rtt" && STALLS.has(code);
}

/**
 * UDP payloads are sent as fast as iperf3 can (-b 0): the figure is what the path carries. TCP over
 * IPv6 runs in the setup's IPv6-only lab, its CPU counted for that lab's agents.
 */
export async function runWorkload(l: BenchLab, w: LabWorkload, s: WorkloadSettings): Promise<SampleFigures> {
  switch (w.kind) {
    case "tcp": {
      const on = w.family === 6 ? l.ipv6Lab() : l;
      const { result: r, cpu } = await measureCpu(agentPids(on), () =>
        iperf(on.server, on.client, { seconds: s.duration, streams: w.streams, family: w.family }),
      );
      if (r.receivedBytes <= 0) throw new WeftError("BENCH_NO_TRAFFIC", `${l.setup.name}: iperf3 TCP moved no bytes`);
      const perGB = cpuPerGigabyte(cpu, r.receivedBytes);
      return {
        values: {
          gbps: r.bitsPerSecond / 1e9,
          cpuAgents: perGB.agents,
          cpuKernel: perGB.kernel,
          cpuTotal: perGB.total,
        },
        raw: { iperf: r, cpu },
      };
    }
    case "udp": {
      const r = await iperf(l.server, l.client, { seconds: s.duration, udp: true, length: w.payload, bitrate: "0" });
      if (!r.packets || r.seconds <= 0)
        throw new WeftError("BENCH_NO_TRAFFIC", `${l.setup.name}: iperf3 UDP ${w.payload} B sent nothing`);
      return { values: udpFigures(r), raw: { iperf: r } };
    }
    case "rtt": {
      const r = await ping(l.client, l.server.addr, { count: s.pingCount, intervalS: s.pingIntervalS, timeoutS: 1 });
      return {
        values: roundTripFigures(r, l.setup.name),
        raw: { sent: r.sent, received: r.received, rttsMs: r.rtts },
      };
    }
    case "loaded-rtt":
      return pingUnderLoad(l.client, l.server, {
        seconds: s.duration,
        pingCount: s.pingCount,
        pingIntervalS: s.pingIntervalS,
      });
    case "flood-tail":
      return floodTail(l.client, l.server, { seconds: Math.min(s.duration, 5) });
  }
}

/**
 * A UDP iperf3 run's rates and loss (`weft bench` and bench:e2e): loss is the share of the sent
 * datagrams the server did not receive, a lost tail included (iperfTotals).
 */
export function udpFigures(r: IperfResult): { sentKpps: number; receivedKpps: number; lossPercent: number } {
  const sent = r.packets ?? 0;
  const received = r.receivedPackets ?? 0;
  return {
    sentKpps: sent / r.seconds / 1e3,
    receivedKpps: received / r.seconds / 1e3,
    lossPercent: sent > 0 ? 100 * (1 - received / sent) : 0,
  };
}

/**
 * A ping run's p50, p99 and loss (`weft bench` and bench:e2e); BENCH_NO_TRAFFIC without a reply,
 * whose percentiles would be NaN, not a round trip.
 */
export function roundTripFigures(r: PingResult, setup: string): { p50: number; p99: number; lossPercent: number } {
  if (r.rtts.length === 0)
    throw new WeftError("BENCH_NO_TRAFFIC", `${setup}: no ping was answered (${r.sent} sent): the pods' path is down`);
  return {
    p50: percentile(r.rtts, 0.5),
    p99: percentile(r.rtts, 0.99),
    lossPercent: (100 * (r.sent - r.received)) / r.sent,
  };
}
