// The benchmark's outputs: the terminal table, and in the report directory report.json (raw
// samples, machine, commit, settings), report.md (for people; links the chart) and chart.svg.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { OffloadState } from "../dataplane/offload.js";
import type { MachineInfo } from "./machine.js";
import type { MicroResult } from "./micro.js";
import { chartSvg } from "./chart.js";
import { LOADED_PINGS } from "./load.js";
import { BASELINE, type BenchSettings } from "./settings.js";
import type { Figure } from "./summary.js";
import { figureHeader, figureRow, markdownTable, microHeader, microRow, microSuites, textTable } from "./table.js";
import type { FailedRun, Sample } from "./workloads.js";

export interface BenchReport {
  tool: "weft bench";
  /** The command line as typed (argv after node). */
  command: string;
  startedAt: string;
  finishedAt: string;
  git: { commit: string; dirty: boolean };
  machine: MachineInfo;
  settings: BenchSettings;
  /** The net-conf.json each setup's agents ran with, by setup name. */
  netConf: Record<string, object>;
  /** The offloads each userspace setup's dataplanes really ran with, by setup name, then host. */
  offload: Record<string, Record<string, OffloadState>>;
  figures: Figure[];
  samples: Sample[];
  /** The runs that failed, in the order they ran (none in a clean run). */
  failures: FailedRun[];
  /** Runs of ping under load whose iperf3 ended without a result and that were measured again. */
  retried: FailedRun[];
  micro: MicroResult[];
  /**
   * The step after the traffic rounds that failed (idle cost, teardown, microbenchmarks): what it
   * measures is missing (the run exits with its code). Absent when every step ran.
   */
  incomplete?: { step: string; code?: string; message: string };
}

export const REPORT_FILES = { json: "report.json", markdown: "report.md", chart: "chart.svg" } as const;

export function terminalSummary(r: BenchReport): string {
  const s = r.settings;
  const names = s.setups.map((x) => x.name);
  const offload = offloadInForce(r);
  return [
    `weft bench: medians of ${s.rounds} round${s.rounds === 1 ? "" : "s"}, ${s.duration} s per iperf3 run; in parentheses the ratio to ${BASELINE} from the same run (the median of the rounds' own ratios)`,
    ...(offload.length > 0 ? [`offloads in force: ${offload.join("; ")}`] : []),
    "",
    textTable(
      figureHeader(names),
      r.figures.map((f) => figureRow(f, names)),
    ),
    ...failedRuns(r.failures).map((line) => `FAILED ${line}`),
    ...failedRuns(r.retried).map((line) => `MEASURED AGAIN ${line}`),
    ...(r.incomplete ? [`INCOMPLETE ${incompleteLine(r.incomplete)}`] : []),
    "",
    "microbenchmarks (one core, benchmark.js)",
    ...microSuites(r.micro).map(([suite, ms]) => `\n${suite}\n${textTable(microHeader(), ms.map(microRow), 1)}`),
  ].join("\n");
}

export async function writeReport(dir: string, r: BenchReport): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, REPORT_FILES.json), JSON.stringify(r, null, 2) + "\n");
  await writeFile(
    join(dir, REPORT_FILES.chart),
    chartSvg(
      r.figures,
      r.settings.setups,
      `weft bench, ${r.finishedAt.slice(0, 10)}, ${r.machine.cores} cores, ${r.machine.cpuModel}`,
    ),
  );
  await writeFile(join(dir, REPORT_FILES.markdown), markdown(r));
}

/**
 * Per userspace setup, the offloads its dataplanes ran with: "on" may have fallen back to off
 * where the kernel lacks a feature, and then the figures are not what the name says.
 */
function offloadInForce(r: BenchReport): string[] {
  const describe = (o: OffloadState) =>
    o.enabled ? `on (TUN ${o.tun.join(", ")}; UDP GRO)` : `off (${o.reason ?? "no reason given"})`;
  return Object.entries(r.offload).map(([setup, hosts]) => {
    const states = [...new Set(Object.values(hosts).map(describe))];
    return `${setup}: ${
      states.length === 1
        ? states[0]
        : Object.entries(hosts)
            .map(([h, o]) => `${h} ${describe(o)}`)
            .join(", ")
    }`;
  });
}

/** The failed step after the traffic rounds, and its error. */
function incompleteLine(i: NonNullable<BenchReport["incomplete"]>): string {
  return `${i.step} failed: ${i.code ? `[${i.code}] ` : ""}${i.message}; its figures are missing`;
}

/** One line per failed run: where, and what went wrong. */
function failedRuns(runs: readonly FailedRun[]): string[] {
  return runs.map((f) => `round ${f.round} · ${f.setup} · ${f.label}: [${f.code}] ${f.message}`);
}

function markdown(r: BenchReport): string {
  const s = r.settings;
  const m = r.machine;
  const names = s.setups.map((x) => x.name);
  const offload = offloadInForce(r);
  const userspace = s.setups.some((x) => x.offloads !== undefined);
  return `# weft bench: ${names.filter((n) => n !== BASELINE).join(", ")} against kernel vxlan

Run ${r.startedAt} to ${r.finishedAt} with \`${r.command}\`, weft commit \`${r.git.commit}\`${r.git.dirty ? " (with uncommitted changes)" : ""}.
Machine: ${m.cores} cores, ${m.cpuModel}, Linux ${m.kernel}, ${m.memoryGiB} GiB, Node.js ${m.node}; 1-minute load average at the start ${m.loadAverageAtStart.toFixed(2)}${m.loadAverageAfterTraffic === undefined ? "" : `, after the last traffic round ${m.loadAverageAfterTraffic.toFixed(2)}`}.
Settings: ${s.rounds} round${s.rounds === 1 ? "" : "s"}, ${s.duration} s per iperf3 run, TCP with ${s.streams.join(" and ")} stream${s.streams.length === 1 && s.streams[0] === 1 ? "" : "s"}, ${s.pingCount} pings ${s.pingIntervalS * 1000} ms apart per round${s.quick ? " (--quick: a smoke run, not a measurement)" : ""}.
${userspace ? `Segmentation offloads of the userspace backends: \`--offloads ${s.offloads.join(",")}\`; in force: ${offload.join("; ") || "not reported"}.\n` : ""}Raw samples, the machine and the settings are in [${REPORT_FILES.json}](${REPORT_FILES.json}).
${r.incomplete ? `\n**Incomplete**: ${incompleteLine(r.incomplete)}.\n` : ""}
## Results

Each cell is the median over rounds; in parentheses its ratio to kernel vxlan from the same run, paired by round: the median of the rounds' own ratios (each round's two runs met the same machine, so drift between rounds cancels): \`pairedRatios\` in report.json, where \`ratios\` is the ratio of the two medians, which reports before that change showed; "k of n rounds" when only k rounds had both (none below half the rounds, and none for a figure that may be 0, such as loss, when kernel vxlan's median is 0)${r.failures.length > 0 ? ", and how many of its runs failed (the median is over the others)" : ""}.

${markdownTable(
  figureHeader(names),
  r.figures.map((f) => figureRow(f, names)),
)}
${
  r.failures.length > 0
    ? `\n**Failed runs** (not measured; the run went on):\n\n${failedRuns(r.failures)
        .map((line) => `- ${line}`)
        .join("\n")}\n`
    : ""
}${
  r.retried.length > 0
    ? `\n**Measured again** (the first attempt's iperf3 gave no result):\n\n${failedRuns(r.retried)
        .map((line) => `- ${line}`)
        .join("\n")}\n`
    : ""
}
![every figure as a ratio to kernel vxlan](${REPORT_FILES.chart})

## How to read it

- **Setup.** For each setup (a backend; the userspace ones once per \`--offloads\` setting) its own
  lab: two hosts as network namespaces on a switch (a bridge), each with a cni0 bridge and one
  pod, and a real \`weft agent\` per host running that backend (net-conf.json in the JSON file).
  All labs are built before the first measurement and the runs alternate between setups (each
  round runs every workload on every setup, starting with a different setup each round and
  every other round in reverse order, so no setup always runs right after the same one), so
  drift of the machine hits every setup alike. Compare setups by their ratios, not by absolute
  figures from different runs or machines.
${
  userspace
    ? `- **Offloads.** The userspace backends (wasm-vxlan, udp) use segmentation offloads by default:
  TCP crosses the TUN device as 64 KB super-packets that weft segments and coalesces, and the
  sockets use UDP GSO/GRO; the datagrams on the wire are the same either way. A setup named
  "(offloads off)" runs with \`Backend.Offloads: false\`; one without the suffix runs with them
  on, unless the kernel lacks a feature (then "in force" above says off, and why).
`
    : ""
}- **TCP**: iperf3 from host1's pod to host2's pod, received throughput.
- **UDP**: iperf3 with the given payload, sent as fast as the sender can (\`-b 0\`): packets per
  second sent, received by the server, and the share lost on the way.
- **Round trip**: ping between the pods, ${s.pingIntervalS * 1000} ms apart; p50 and p99 of the replies.
- **Ping under load**: ${LOADED_PINGS} such pings at once while a TCP stream and a UDP flood (1400 B,
  \`-b 0\`) run from the same client pod to the same server pod (${Math.max(s.duration, 4)} s; the pings start
  after 1 s); each ping has its own echo identifier, so its own draw of queue pair and worker, and
  p50 and p99 are over all their replies pooled (the share lost over all their pings).
- **Flood tail**: a UDP flood of its own for ${Math.max(Math.min(s.duration, 5), 3)} s (\`src/bench/probe.ts\`: 1400 B
  datagrams as fast as its sender can, one flow, each timestamped), so every backend is measured
  on the queues the flood itself fills: *oldest of its own delivered after its stop* is the age of
  the oldest datagram that arrived after the last one was sent (on an empty path, about the
  path's one-way delay), what a standing queue still delivers; also the one-way delay p50 and p99
  of all its delivered datagrams, its sent rate (below what the path carries: the flood did not
  fill it) and received rate, its loss and, of that, the share dropped at the receiving socket.
  All include the receiving end: its socket and the scheduling of the process that reads it. A
  tail still arriving when the receiver stopped waiting is \`tailCutOff\` in report.json. Before this flood, an iperf3 flood ran beside a 64 B probe flow, whose figures
  (\`tailMs\`, \`delayP99Ms\`) do not compare with these (\`floodTailMs\`, \`floodDelayP99Ms\`).
- **Idle cost**: once, after all the traffic, every setup's agents side by side for
  ${s.idleSeconds} s with nothing flowing: the CPU time (user + system, all threads) of each agent as a
  share of one core.
- **Median and percentiles** (\`src/bench/stats.ts\`, the one implementation every weft benchmark
  uses): a cell's median over rounds is the middle value, or the mean of the two middle ones for
  an even number of rounds. A pN (p50, p99 of ping times, one-way delays) is the nearest rank: the
  smallest observed value with at least N% of the values at or below it, never interpolated: of
  R replies, p99 is the ⌈0.99 R⌉th fastest (a lost ping has no reply, so no place in the order;
  under load R counts the ${LOADED_PINGS} pings' replies pooled). With all ${s.pingCount} round-trip pings
  answered, p99 is the ${Math.ceil(0.99 * s.pingCount)}th fastest.
- **CPU per GB** (\`src/bench/cpu.ts\`, the one definition; \`bench:e2e\` and \`bench:profile\`
  report the same three), over each TCP run, from /proc, in CPU seconds per 10^9 bytes received:
  *agents* is both agents' own time (utime + stime of their processes, all threads: the cost of
  a userspace dataplane; near zero for kernel backends, whose agents only program the kernel);
  *kernel* is the machine's system + irq + softirq time (the kernel datapath, including the
  agents' and iperf3's syscalls); *total* = the agents' user time + kernel, counting nothing twice.
  iperf3's own user time is in none of them.
- **Noise.** Everything shares the machine's ${m.cores} cores: both hosts' kernels, iperf3 and the agents.
  Machine-wide CPU counters and throughput also see every other process that ran meanwhile, so a
  busy machine (see the load average above) makes figures noisy; more rounds and longer runs help.

## Microbenchmarks

\`npm run bench:micro\`, run by \`weft bench\` as a process of its own. The hot path alone on one
core (benchmark.js, ${s.microMaxTime} s per case): route lookups and VXLAN
encapsulation and decapsulation in WebAssembly, each against the plain TypeScript reference, and
the offload paths (segmenting TSO super-packets, coalescing a GRO receive) in payload bytes/s.

${microSuites(r.micro)
  .map(([suite, ms]) => `### ${suite}\n\n${markdownTable(microHeader(), ms.map(microRow), 1)}\n`)
  .join("\n")}`;
}
