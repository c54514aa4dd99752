// `npm run bench:e2e` (root): the two-host topology once per dataplane — kernel vxlan (as flannel
// programs it), weft's wasm-vxlan and udp — and the same workloads on each, interleaved round by
// round (A B C A B C ...) so that machine drift hits all alike. Prints medians and each userspace
// figure as a ratio to kernel vxlan from the same run paired by round, and with several userspace
// setups (an A/B of knobs) each against the first, paired round by round, both by `weft bench`'s
// rules (ratio-cells.ts); writes raw samples as JSON. `--help` lists the options.
import { writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { Command, Option } from "commander";
import { DEFAULT_WORKERS_RULE, defaultWorkers } from "../../src/dataplane/defaults.js";
import { cpuPerGigabyte, measureOwnCpu } from "../../src/bench/cpu.js";
import { floodTail, pingUnderLoad } from "../../src/bench/load.js";
import { median } from "../../src/bench/stats.js";
import { retryable, roundTripFigures, udpFigures } from "../../src/bench/workloads.js";
import { WeftError } from "../../src/errors.js";
import { checkTrafficTools, iperf, ping } from "../../src/lab/traffic.js";
import { listOf, numberValue, onOff, oneOf, wholeNumber } from "../cli-options.js";
import { perRound } from "./per-round.js";
import { abCell, ratioToKernel } from "./ratio-cells.js";
import { destroySetup, kernelVxlan, userspace, type Knobs, type Setup } from "./setups.js";

interface Sample {
  setup: string;
  workload: string;
  round: number;
  value: number;
  unit: string;
  extra?: Record<string, number>;
}

const workloads: Array<{
  name: string;
  unit: string;
  /** Zero is a real outcome (no tail), as `weft bench`'s figures that may be 0: no ratio to a median of 0. */
  mayBeZero?: boolean;
  run: (s: Setup, round: number) => Promise<{ value: number; extra?: Record<string, number> }>;
}> = [
  { name: "TCP 1 stream", unit: "Gbit/s", run: async (s) => tcp(s, 1) },
  { name: "TCP 4 streams", unit: "Gbit/s", run: async (s) => tcp(s, 4) },
  { name: "UDP 64 B", unit: "kpps recv", run: async (s) => udp(s, 64) },
  { name: "UDP 1400 B", unit: "kpps recv", run: async (s) => udp(s, 1400) },
  { name: "ping p50", unit: "ms", run: async (s, round) => rtt(s, round, "p50") },
  { name: "ping p99", unit: "ms", run: async (s, round) => rtt(s, round, "p99") },
  { name: "loaded ping p50", unit: "ms", run: async (s, round) => loadedRtt(s, round, "p50") },
  { name: "loaded ping p99", unit: "ms", run: async (s, round) => loadedRtt(s, round, "p99") },
  {
    // Not "flood tail": that was a probe flow beside an iperf3 flood (older --out files).
    name: "own flood tail",
    unit: "ms",
    mayBeZero: true,
    run: async (s) => {
      const { values: v } = await floodTail(s.client, s.server, { seconds: Math.min(duration, 5) });
      return {
        value: v.floodTailMs,
        extra: { floodDelayP99Ms: v.floodDelayP99Ms, floodLossPercent: v.floodLossPercent },
      };
    },
  },
];

const DATAPLANES = ["kernel-vxlan", "wasm-vxlan", "udp"] as const;
const WORKLOADS = workloads.map((w) => w.name);
/** A userspace-only knob: a list, one setup per value; without it, the dataplane's own default. */
const knob = (flags: string, description: string, item: (v: string) => unknown) =>
  new Option(flags, `${description} (default: the dataplane's)`).argParser(listOf(item));
const program = new Command("bench:e2e")
  .description(
    "kernel vxlan, wasm-vxlan and udp dataplanes pod to pod between two hosts in network namespaces, workloads interleaved round by round, ratios to kernel vxlan (root)",
  )
  .option("--duration <s>", "seconds per throughput run", numberValue({ min: 1 }), 10)
  .option("--rounds <n>", "rounds; each runs every workload on every setup", wholeNumber(1), 3)
  .addOption(
    new Option("--workers <n,...>", "userspace dataplane workers; each count a setup of its own")
      .argParser(listOf(wholeNumber(1)))
      .default([defaultWorkers()], `the dataplane's: ${DEFAULT_WORKERS_RULE}`),
  )
  .option("--out <file>", "write the raw samples as JSON")
  .addOption(
    new Option("--only <names>", "the dataplanes to measure, comma-separated")
      .argParser(listOf(oneOf(DATAPLANES)))
      .default([...DATAPLANES], DATAPLANES.join(",")),
  )
  .addOption(
    new Option("--offloads <on,off>", "userspace setups with segmentation offloads, without, or both")
      .argParser(listOf(onOff))
      .default([true, false], "on,off"),
  )
  .addOption(
    new Option(
      "--workloads <names>",
      'a subset of the workloads below, comma-separated (quote it: "TCP 1 stream,ping p99")',
    )
      .argParser(listOf(oneOf(WORKLOADS)))
      .default(WORKLOADS, "all"),
  )
  .addOption(knob("--busy-poll <us,...>", "userspace setups per busy-poll budget in µs", wholeNumber(0)))
  .addOption(knob("--queue-delay <us,...>", "userspace setups per receive-queue sojourn limit in µs", wholeNumber(0)))
  .addOption(
    knob(
      "--nice <n,...>",
      "userspace setups per worker-thread nice value",
      numberValue({ min: -20, max: 19, whole: true }),
    ),
  )
  .addOption(knob("--flow-queue <on,off>", "userspace setups with the send path's flow queue and without", onOff))
  .addOption(knob("--tun-queue <n,...>", "userspace setups per TUN ring length, packets per queue", wholeNumber(1)))
  .addOption(
    knob(
      "--udp-batching <on,off>",
      "userspace setups with UDP GSO trains on send and USO merges on receive for datagrams other than TCP's, and without",
      onOff,
    ),
  )
  .addOption(
    knob(
      "--queues-per-worker <n,...>",
      "userspace setups per count of queue pairs (TUN queue and socket) each worker serves",
      wholeNumber(1),
    ),
  )
  .addOption(
    knob(
      "--tun-steering <on,off>",
      "userspace setups whose TUN device picks queues by weft's flow hash (an eBPF program), and by its own flow table",
      onOff,
    ),
  )
  .addHelpText(
    "after",
    [
      "",
      "Workloads (loaded ping and own flood tail are weft bench's ping under load and flood tail):",
      ...workloads.map((w) => `  ${w.name.padEnd(16)} ${w.unit}`),
      "",
      "Userspace setups are every combination of --offloads, --workers and the knobs, named like",
      "wasm-vxlan/off/w2 (offloads off, 2 workers) or wasm-vxlan/on/w2/n-10 (nice -10).",
    ].join("\n"),
  )
  .parse();
const args = program.opts<{
  duration: number;
  rounds: number;
  workers: number[];
  out?: string;
  only: string[];
  offloads: boolean[];
  workloads: string[];
  busyPoll?: number[];
  queueDelay?: number[];
  nice?: number[];
  flowQueue?: boolean[];
  tunQueue?: number[];
  udpBatching?: boolean[];
  queuesPerWorker?: number[];
  tunSteering?: boolean[];
}>();
const { duration, rounds } = args;
const workerCounts = args.workers;
const offloadModes = args.offloads;
/** A knob's values, or the dataplane's default alone. */
const each = <T>(values: T[] | undefined): Array<T | undefined> => values ?? [undefined];
const knobSets: Knobs[] = each(args.busyPoll).flatMap((busyPollUs) =>
  each(args.queueDelay).flatMap((queueDelayUs) =>
    each(args.nice).flatMap((nice) =>
      each(args.flowQueue).flatMap((flowQueue) =>
        each(args.tunQueue).flatMap((tunQueueLen) =>
          each(args.udpBatching).flatMap((udpBatching) =>
            each(args.queuesPerWorker).flatMap((queuesPerWorker) =>
              each(args.tunSteering).map((tunSteering) => ({
                busyPollUs,
                queueDelayUs,
                nice,
                flowQueue,
                tunQueueLen,
                udpBatching,
                queuesPerWorker,
                tunSteering,
              })),
            ),
          ),
        ),
      ),
    ),
  ),
);

/**
 * Packets the setup's dataplanes dropped so far at their flow queues and at their TUN devices'
 * rings (0 without a userspace dataplane or flow queue).
 */
const drops = (s: Setup) => {
  const all = s.dataplanes.map((dp) => dp.counters());
  return {
    flowQueueDrops: all.reduce((n, c) => n + Number(c.io.flowQueueDrops), 0),
    tunRingDrops: all.reduce((n, c) => n + Number(c.tunRingDrops ?? 0n), 0),
  };
};

/**
 * CPU seconds per GB as `weft bench` defines them (src/bench/cpu.ts): the dataplanes run in this
 * process, so its own threads stand for the agents (kernel vxlan's setup has no dataplane: near
 * zero); iperf3, its child, is not counted there.
 */
async function tcp(s: Setup, streams: number) {
  const dropsBefore = drops(s);
  const { result: r, cpu } = await measureOwnCpu(() => iperf(s.server, s.client, { seconds: duration, streams }));
  const extra: Record<string, number> = { retransmits: r.retransmits ?? 0 };
  if (s.dataplanes.length > 0) {
    const after = drops(s);
    extra.flowQueueDrops = after.flowQueueDrops - dropsBefore.flowQueueDrops;
    extra.tunRingDrops = after.tunRingDrops - dropsBefore.tunRingDrops;
  }
  if (r.receivedBytes > 0) {
    const perGB = cpuPerGigabyte(cpu, r.receivedBytes);
    Object.assign(extra, { cpuTotal: perGB.total, cpuAgents: perGB.agents, cpuKernel: perGB.kernel });
  }
  return { value: r.bitsPerSecond / 1e9, extra };
}

async function udp(s: Setup, length: number) {
  const ringBefore = drops(s).tunRingDrops;
  const r = await iperf(s.server, s.client, { seconds: Math.max(2, duration / 2), udp: true, length, bitrate: "0" });
  const { sentKpps, receivedKpps, lossPercent } = udpFigures(r);
  const percentOfSent = (n: number) => (r.packets ? (100 * n) / r.packets : 0);
  const extra: Record<string, number> = {
    sentKpps,
    lossPercent,
    // Of that loss, the share dropped at the receiving pod's socket (iperf3 did not read in time).
    receiverDropPercent: percentOfSent(r.receiverSocketDrops ?? 0),
  };
  // And the share the sending host's TUN ring dropped before a worker read it.
  if (s.dataplanes.length > 0) extra.tunRingDropPercent = percentOfSent(drops(s).tunRingDrops - ringBefore);
  return { value: receivedKpps, extra };
}

const pingRun = perRound<ReturnType<typeof roundTripFigures>>();
async function rtt(s: Setup, round: number, q: "p50" | "p99") {
  const v = await pingRun(s.name, round, async () =>
    roundTripFigures(await ping(s.client, s.server.addr, { count: 200, intervalS: 0.005, timeoutS: 1 }), s.name),
  );
  return { value: v[q], extra: { lossPercent: v.lossPercent } };
}

const loadedRun = perRound<Awaited<ReturnType<typeof pingUnderLoad>>["values"] & { measuredAgain: number }>();
/** Ping under load as `weft bench` measures it (src/bench/load.ts). */
async function loadedRtt(s: Setup, round: number, q: "p50" | "p99") {
  const v = await loadedRun(s.name, round, async () => {
    const measure = async () =>
      (await pingUnderLoad(s.client, s.server, { seconds: duration, pingCount: 400, pingIntervalS: 0.01 })).values;
    try {
      return { ...(await measure()), measuredAgain: 0 };
    } catch (error) {
      // As `weft bench` does: a TCP stream stalled beside the flood is measured once more, and said.
      if (!(error instanceof WeftError) || !retryable("loaded-rtt", error.code)) throw error;
      console.log(
        `round ${round}  loaded ping     ${s.name}: [${error.code}] ${error.message}; measuring it again${error.detail ? `\n${error.detail}` : ""}`,
      );
      return { ...(await measure()), measuredAgain: 1 };
    }
  });
  return { value: v[q], extra: { lossPercent: v.lossPercent, tcpGbps: v.tcpGbps, measuredAgain: v.measuredAgain } };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench:e2e builds network namespaces: run it as root");
  checkTrafficTools();
  const wanted = args.only;
  const chosen = workloads.filter((w) => args.workloads.includes(w.name));
  const setups: Setup[] = [];
  try {
    if (wanted.includes("kernel-vxlan")) setups.push(await kernelVxlan());
    for (const format of ["vxlan", "udp"] as const) {
      if (!wanted.includes(format === "vxlan" ? "wasm-vxlan" : "udp")) continue;
      for (const offloads of offloadModes)
        for (const w of workerCounts) for (const k of knobSets) setups.push(await userspace(format, offloads, w, k));
    }
    for (const s of setups) {
      const p = await ping(s.client, s.server.addr, { count: 3 });
      if (p.received !== 3) throw new Error(`${s.name}: pods cannot reach each other (${p.received}/3 pings)`);
    }
    const samples: Sample[] = [];
    const failures: Array<{ setup: string; workload: string; round: number; error: string; detail?: string }> = [];
    for (let round = 1; round <= rounds; round++) {
      for (const w of chosen) {
        for (const s of setups) {
          let r: Awaited<ReturnType<typeof w.run>>;
          try {
            r = await w.run(s, round);
          } catch (error) {
            // One stalled run must not cost the others: note it and go on (medians skip it).
            const text = error instanceof Error ? error.message : String(error);
            const detail = error instanceof WeftError ? error.detail : undefined;
            failures.push({ setup: s.name, workload: w.name, round, error: text, ...(detail && { detail }) });
            console.log(
              `round ${round}  ${w.name.padEnd(14)} ${s.name.padEnd(13)} FAILED: ${text}${detail ? `\n${detail}` : ""}`,
            );
            continue;
          }
          samples.push({ setup: s.name, workload: w.name, round, value: r.value, unit: w.unit, extra: r.extra });
          console.log(
            `round ${round}  ${w.name.padEnd(14)} ${s.name.padEnd(13)} ${r.value.toFixed(3)} ${w.unit}${r.extra ? "  " + JSON.stringify(r.extra) : ""}`,
          );
        }
      }
    }
    if (failures.length > 0) console.log(`\n${failures.length} runs failed (above); medians are over the others`);
    const byRound = (setup: string, workload: string, value: (x: Sample) => number) => {
      const out: Array<number | undefined> = Array.from({ length: rounds }, () => undefined);
      for (const x of samples) if (x.setup === setup && x.workload === workload) out[x.round - 1] = value(x);
      return out;
    };
    console.log(
      `\nmedians of ${rounds} rounds, ${duration} s runs, ratio to kernel-vxlan paired by round (the median of the rounds' own ratios, as weft bench; "k/n": over k rounds of n; n/a: fewer than half the rounds paired, or a figure that may be 0 against kernel-vxlan's median of 0)`,
    );
    console.log(["workload".padEnd(16), ...setups.map((s) => s.name.padStart(24))].join(""));
    for (const w of chosen) {
      const base = byRound("kernel-vxlan", w.name, (x) => x.value);
      const cells = setups.map((s) => {
        const m = median(samples.filter((x) => x.setup === s.name && x.workload === w.name).map((x) => x.value));
        const ratio =
          s.name !== "kernel-vxlan" && wanted.includes("kernel-vxlan")
            ? ratioToKernel(
                base,
                byRound(s.name, w.name, (x) => x.value),
                w.mayBeZero ?? false,
              )
            : "";
        return `${m.toFixed(3)}${ratio}`.padStart(24);
      });
      console.log([`${w.name} ${w.unit}`.padEnd(16).slice(0, 16), ...cells].join(""));
    }
    console.log(
      `\nCPU seconds per GB, total (TCP, medians; in parentheses the dataplanes' own, "agents" in weft bench)`,
    );
    for (const w of chosen.filter((x) => x.name.startsWith("TCP"))) {
      const cells = setups.map((s) => {
        const xs = samples.filter((x) => x.setup === s.name && x.workload === w.name);
        const m = median(xs.map((x) => x.extra?.cpuTotal ?? NaN));
        const weft = s.dataplanes.length ? ` (${median(xs.map((x) => x.extra?.cpuAgents ?? NaN)).toFixed(2)})` : "";
        return `${m.toFixed(2)}${weft}`.padStart(24);
      });
      console.log([w.name.padEnd(16), ...cells].join(""));
    }
    // An A/B: every other userspace setup against the first, round by round.
    const userspaceSetups = setups.filter((s) => s.dataplanes.length > 0);
    if (userspaceSetups.length > 1) {
      const [a, ...others] = userspaceSetups;
      const row = (label: string, workload: string, value: (x: Sample) => number, mayBeZero: boolean) => {
        const cells = others.map((b) =>
          abCell(byRound(a.name, workload, value), byRound(b.name, workload, value), mayBeZero).padStart(24),
        );
        console.log([label.padEnd(20), ...cells].join(""));
      };
      console.log(
        `\npaired against ${a.name}: the median of the rounds' ratios, and in how many of the paired rounds lower (n/a as above)`,
      );
      console.log(["workload".padEnd(20), ...others.map((s) => s.name.padStart(24))].join(""));
      for (const w of chosen) row(w.name, w.name, (x) => x.value, w.mayBeZero ?? false);
      // The dataplanes' own CPU: `weft bench`'s "CPU agents", a figure that may be 0.
      for (const w of chosen.filter((x) => x.name.startsWith("TCP")))
        row(`${w.name} CPU`, w.name, (x) => x.extra?.cpuAgents ?? NaN, true);
    }
    if (args.out) {
      writeFileSync(
        args.out,
        JSON.stringify(
          {
            cpu: cpus()[0]?.model,
            cores: cpus().length,
            kernel: release(),
            duration,
            rounds,
            workers: workerCounts,
            offloads: offloadModes,
            samples,
            failures,
          },
          null,
          2,
        ) + "\n",
      );
      console.log(`raw samples in ${args.out}`);
    }
  } finally {
    const torn = await Promise.allSettled(setups.map(destroySetup));
    for (const r of torn) if (r.status === "rejected") console.error(r.reason);
  }
}

await main();
