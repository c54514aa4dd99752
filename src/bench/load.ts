// The workloads of `weft bench` about behaviour under load and without it: ping under load (a UDP
// flood and a TCP stream cross the same nodes while pings measure the round trip), flood tail
// (a flood of timestamped datagrams, probe.ts: how old are the ones still delivered after it
// stopped), and idle cost (the agents' CPU while nothing flows).
import { spawn } from "node:child_process";
import { setTimeout as sleepFor } from "node:timers/promises";
import { errorMessage, WeftError } from "../errors.js";
import type { LabPod } from "../lab/cluster.js";
import { iperf, ping } from "../lab/traffic.js";
import { formatIpv4 } from "../net/ipv4.js";
import { projectFile } from "../paths.js";
import { measureCpu } from "./cpu.js";
import { settleAll } from "../util/settle.js";
import { percentile } from "./stats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Ping processes at once in ping under load. Each has its own echo identifier, which the steering
 * programs hash as a flow's ports, so each lands on a queue pair, and a worker, of its own draw:
 * one ping alone measured whichever worker it drew (beside the TCP stream's or not), and its p99
 * moved 2–11 ms from round to round on that draw (ARCHITECTURE.md, "Latency"). Pooled, a round's
 * percentiles cover the placements a pod's flows meet.
 */
export const LOADED_PINGS = 4;

/**
 * Pings from client to server while a TCP stream and a UDP flood (1400 B, as fast as iperf3 can)
 * run the same way; the pings (LOADED_PINGS processes, each the given count and interval) start
 * once both have run a second, and their round trips are pooled. Lost pings count as loss.
 */
export async function pingUnderLoad(
  client: LabPod,
  server: LabPod,
  o: { seconds: number; pingCount: number; pingIntervalS: number },
) {
  const seconds = Math.max(o.seconds, 4);
  const pings = (async () => {
    await sleep(1000);
    const count = Math.max(10, Math.min(o.pingCount, Math.floor((seconds - 2) / o.pingIntervalS)));
    return settleAll(
      Array.from({ length: LOADED_PINGS }, () =>
        ping(client, server.addr, { count, intervalS: o.pingIntervalS, timeoutS: 1 }),
      ),
    );
  })();
  // Whatever fails, every part is awaited, so no iperf3 or ping outlives the run.
  const [each, tcp, udp] = await settleNamed(
    ["pings", "TCP", "UDP"],
    [
      pings,
      iperf(server, client, { seconds, streams: 1 }),
      iperf(server, client, { seconds, udp: true, length: 1400, bitrate: "0" }),
    ],
  );
  const rtts = each.flatMap((r) => r.rtts);
  const sent = each.reduce((n, r) => n + r.sent, 0);
  if (rtts.length === 0)
    throw new WeftError("BENCH_NO_TRAFFIC", `no ping under load from ${client.name} to ${server.name} was answered`);
  return {
    values: {
      p50: percentile(rtts, 0.5),
      p99: percentile(rtts, 0.99),
      lossPercent: (100 * (sent - rtts.length)) / sent,
      tcpGbps: tcp.bitsPerSecond / 1e9,
    },
    raw: {
      sent,
      received: rtts.length,
      rttsMs: rtts,
      // Each ping's own figures: how far apart the placements were.
      perPing: each.map((r) => ({
        sent: r.sent,
        received: r.received,
        ...(r.rtts.length > 0 && { p50: percentile(r.rtts, 0.5), p99: percentile(r.rtts, 0.99) }),
      })),
      tcp,
      udp,
    },
  };
}

/**
 * settleAll, and when several parts failed, one error that names each with its failure (which of
 * TCP, UDP and the pings stalled together tells a path's stall from one tool's): the first
 * failure's code, so a retry still sees why, and every part's detail.
 */
async function settleNamed<T extends readonly unknown[] | []>(names: readonly string[], parts: T) {
  const results = await Promise.allSettled(parts);
  const failed = results.flatMap((r, i) => (r.status === "rejected" ? [{ name: names[i], error: r.reason }] : []));
  const first = failed[0]?.error;
  if (failed.length > 1 && first instanceof WeftError) {
    const each = (e: unknown) => (e instanceof WeftError ? `[${e.code}] ${e.message}` : errorMessage(e));
    throw new WeftError(first.code, `${failed.map((f) => `${f.name}: ${each(f.error)}`).join("; ")}`, {
      cause: first,
      detail:
        failed
          .filter((f) => f.error instanceof WeftError && f.error.detail)
          .map((f) => `${f.name}:\n${(f.error as WeftError).detail}`)
          .join("\n") || undefined,
    });
  }
  return settleAll(parts);
}

/** The probe (probe.ts), run by node as a process of its own in each pod's namespace. */
export const PROBE_SCRIPT = projectFile("dist", "src", "bench", "probe.js");
const PROBE_PORT = 7100;
/** Probe datagrams per second beside the flood: enough samples, too few to matter as load. */
const PROBE_RATE = 2000;
/** How long the receiver waits after the flood for datagrams still queued along the path. */
const DRAIN_MS = 1500;

/**
 * A UDP flood (iperf3, 1400 B, as fast as it can) from client to server for `seconds`, and beside
 * it a probe stream (probe.ts) of timestamped datagrams that starts half a second later and stops
 * half a second before the flood ends, so that its datagrams wait in the queues the flood fills.
 * Figures: `tailMs`, the age of the oldest probe datagram delivered after the last one was sent
 * (of those sent before the final burst, probeTail) — how old what is still delivered after a
 * sender stops gets, a standing queue's delay — (0 when none was); `delayP99Ms`, the probes' one-way delay p99; the flood's and the probes' delivery.
 */
export async function floodTail(client: LabPod, server: LabPod, o: { seconds: number }) {
  const seconds = Math.max(o.seconds, 3);
  const probe = PROBE_SCRIPT;
  const addr = formatIpv4(server.addr);
  const receiver = runProbe(
    server.ns.wrap([process.execPath, probe, "recv", addr, String(PROBE_PORT), String(seconds + 30)]),
    (seconds + 40) * 1000,
  );
  try {
    await receiver.listening;
    const flood = iperf(server, client, { seconds, udp: true, length: 1400, bitrate: "0" });
    const probing = (async () => {
      await sleep(500);
      const sender = runProbe(
        client.ns.wrap([
          process.execPath,
          probe,
          "send",
          addr,
          String(PROBE_PORT),
          String(seconds - 1),
          String(PROBE_RATE),
          "64",
        ]),
        (seconds + 20) * 1000,
      );
      return JSON.parse(await sender.output) as ProbeSender;
    })();
    const [f, s] = await settleAll([flood, probing]);
    await sleep(DRAIN_MS);
    receiver.stop();
    const r = JSON.parse(await receiver.output) as {
      count: number;
      maxDelayNs: string;
      arrivals: Array<[string, string]>;
    };
    if (r.count === 0)
      throw new WeftError(
        "BENCH_NO_TRAFFIC",
        `no probe datagram from ${client.name} reached ${server.name} during the flood`,
      );
    const arrivals = r.arrivals.map(([a, b]) => [BigInt(a), BigInt(b)] as const);
    const tail = probeTail(arrivals, s);
    const delays = arrivals.map(([sent, at]) => ms(at - sent));
    return {
      values: {
        tailMs: tail.tailMs,
        delayP99Ms: percentile(delays, 0.99),
        probeLossPercent: (100 * Math.max(0, s.sent - r.count)) / s.sent,
        floodReceivedKpps: (f.receivedPackets ?? 0) / f.seconds / 1e3,
      },
      raw: {
        probesSent: s.sent,
        probesReceived: r.count,
        maxDelayMs: ms(BigInt(r.maxDelayNs)),
        deliveredAfterStop: tail.deliveredAfterStop,
        flood: f,
      },
    };
  } finally {
    receiver.stop();
  }
}

/** What the probe sender prints at its end (probe.ts): ns as strings. */
export interface ProbeSender {
  sent: number;
  lastSentNs: string;
  finalBurstNs: string;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

/**
 * Of the probe arrivals ([sentNs, receivedNs]), those delivered after the sender stopped (its last
 * datagram sent) that it had sent before its final burst, and the oldest one's age (0 when none):
 * what a queue still held at the stop. The final burst's own datagrams, sent at the stop, always
 * arrive after it even on an empty path, and counted they made the tail the path's one-way delay.
 */
export function probeTail(arrivals: ReadonlyArray<readonly [bigint, bigint]>, s: ProbeSender) {
  const stop = BigInt(s.lastSentNs);
  const finalBurst = BigInt(s.finalBurstNs);
  const after = arrivals.filter(([sent, at]) => at > stop && sent < finalBurst);
  return {
    tailMs: after.reduce((m, [sent, at]) => Math.max(m, ms(at - sent)), 0),
    deliveredAfterStop: after.length,
  };
}

/** A probe process: `listening` once a receiver has bound, `output` its JSON line at exit. */
export function runProbe(argv: string[], limitMs: number) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let onListening: () => void = () => {};
  const listening = new Promise<void>((resolve) => (onListening = resolve));
  child.stdout.on("data", (d) => {
    stdout += d;
    if (stdout.startsWith("listening\n")) onListening();
  });
  child.stderr.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const output = new Promise<string>((resolve, reject) => {
    child.on("error", (e) =>
      reject(new WeftError("BENCH_PROBE_FAILED", `cannot run the flood probe: ${e.message}`, { cause: e })),
    );
    // On close, not exit: by then its JSON line and its stderr have been read.
    child.on("close", (code) => {
      clearTimeout(timer);
      const line = stdout.replace(/^listening\n/, "").trim();
      if (code === 0 && line) resolve(line);
      else
        reject(
          new WeftError(
            "BENCH_PROBE_FAILED",
            `flood probe ${argv.slice(-5).join(" ")} exited ${code}: ${stderr.trim() || "no output"}; is dist/ built (npm run build)?`,
          ),
        );
    });
  });
  output.catch(() => undefined);
  return {
    listening: Promise.race([listening, output.then(() => undefined)]),
    output,
    stop: () => child.exitCode === null && child.kill("SIGTERM"),
  };
}

/**
 * CPU of each lab's agents while no traffic flows, all labs measured in the same window: percent
 * of one core per agent (user + system). Rejects (AbortError) as soon as `signal` aborts.
 */
export async function idleCost(
  labs: Array<{ pids: number[] }>,
  seconds: number,
  signal?: AbortSignal,
): Promise<number[]> {
  // Abortable: a Ctrl-C must not wait out the window.
  const runs = await Promise.all(
    labs.map((l) => measureCpu(l.pids, () => sleepFor(seconds * 1000, undefined, { signal }))),
  );
  return runs.map(({ cpu }, i) => (100 * (cpu.agentsUser + cpu.agentsSystem)) / cpu.wallSeconds / labs[i].pids.length);
}
