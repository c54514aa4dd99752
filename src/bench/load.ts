// The workloads of `weft bench` about behaviour under load and without it: ping under load (a UDP
// flood and a TCP stream cross the same nodes while pings measure the round trip), flood tail
// (a flood of timestamped datagrams, probe.ts: their one-way delay, and how old are the ones
// still delivered after it stopped), and idle cost (the agents' CPU while nothing flows).
import { spawn } from "node:child_process";
import { setTimeout as sleepFor } from "node:timers/promises";
import { errorMessage, WeftError } from "../errors.js";
import type { LabPod } from "../lab/cluster.js";
import { iperf, ping, udpStats } from "../lab/traffic.js";
import { formatIpv4 } from "../net/ipv4.js";
import { projectFile } from "../paths.js";
import { measureCpu } from "./cpu.js";
import { settleAll } from "../util/settle.js";
import { percentile } from "./stats.js";

const sleep = (millis: number) => new Promise((r) => setTimeout(r, millis));

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

/** The flood (probe.ts), run by node as a process of its own in each pod's namespace. */
export const PROBE_SCRIPT = projectFile("dist", "src", "bench", "probe.js");
const PROBE_PORT = 7100;
/** The flood's datagrams: as ping under load's iperf3 flood. */
const FLOOD_LENGTH = 1400;
/** An upper bound on the flood's datagrams per second (with its seconds, its count). */
const FLOOD_MAX_RATE = 1_000_000;
/**
 * How long after the flood the receiver is asked to stop, for datagrams still queued along the
 * path; it then waits until none arrived for a while (probe.ts), or says the tail was cut off.
 */
const DRAIN_MS = 1500;

/**
 * A UDP flood of timestamped datagrams (probe.ts: 1400 B, as fast as its sender can, one flow)
 * from client to server for `seconds`. Its own datagrams are measured, so every backend is
 * measured on the queues the flood fills (a probe flow beside it hashed to other queues on a
 * userspace dataplane most of the time). Figures: `floodTailMs`, the age of the oldest datagram
 * delivered after the last one was sent (how old what a queue still delivers after a flood
 * stops gets; on an empty path the path's one-way delay); the one-way delay p50 and p99 of all
 * its delivered datagrams; the sent and received rates (a sent rate below what a path
 * carries means the flood did not fill it) and the loss, and of that the share dropped at the
 * receiving socket (its buffer full: the receiver, a node process, did not read fast enough).
 * All include the receiving end: its socket and the scheduling of the process that reads it.
 */
export async function floodTail(client: LabPod, server: LabPod, o: { seconds: number }) {
  const seconds = Math.max(o.seconds, 3);
  const addr = formatIpv4(server.addr);
  const receiver = runProbe(
    server.ns.wrap([
      process.execPath,
      PROBE_SCRIPT,
      "recv",
      addr,
      String(PROBE_PORT),
      String(seconds + 30),
      String(seconds * FLOOD_MAX_RATE),
    ]),
    (seconds + 40) * 1000,
  );
  try {
    await receiver.listening;
    const dropsBefore = (await udpStats(server.ns)).rcvbufErrors;
    const s = JSON.parse(
      await runProbe(
        client.ns.wrap([
          process.execPath,
          PROBE_SCRIPT,
          "send",
          addr,
          String(PROBE_PORT),
          String(seconds),
          "0",
          String(FLOOD_LENGTH),
          String(seconds * FLOOD_MAX_RATE),
        ]),
        (seconds + 20) * 1000,
      ).output,
    ) as ProbeSender;
    await sleep(DRAIN_MS);
    receiver.stop();
    const r = JSON.parse(await receiver.output) as ProbeReceiver;
    const receiverDrops = (await udpStats(server.ns)).rcvbufErrors - dropsBefore;
    if (r.count === 0)
      throw new WeftError("BENCH_NO_TRAFFIC", `no datagram of the flood from ${client.name} reached ${server.name}`);
    const tail = floodTailOf(
      r.arrivals.map(([a, b]) => [BigInt(a), BigInt(b)] as const),
      BigInt(s.lastSentNs),
    );
    // From the sender's own start, once connected (not its process's: node takes 0.1-0.2 s to start).
    const sendingS = ms(BigInt(s.lastSentNs) - BigInt(s.startNs)) / 1e3;
    return {
      values: {
        floodTailMs: tail.tailMs,
        floodDelayP50Ms: r.delayP50Ns / 1e6,
        floodDelayP99Ms: r.delayP99Ns / 1e6,
        floodSentKpps: s.sent / sendingS / 1e3,
        floodReceivedKpps: r.count / sendingS / 1e3,
        floodLossPercent: (100 * Math.max(0, s.sent - r.count)) / s.sent,
        floodReceiverDropPercent: (100 * receiverDrops) / s.sent,
      },
      raw: {
        sent: s.sent,
        failedSends: s.failed,
        received: r.count,
        receiverSocketDrops: receiverDrops,
        sendingSeconds: sendingS,
        maxDelayMs: ms(BigInt(r.maxDelayNs)),
        deliveredAfterStop: tail.deliveredAfterStop,
        // Still arriving when the receiver gave up (probe.ts): the tail may be longer than shown.
        tailCutOff: r.cutOff,
      },
    };
  } finally {
    receiver.stop();
  }
}

/** What the flood's sender prints at its end (probe.ts): ns as strings. */
export interface ProbeSender {
  /** Datagrams the socket took; `failed`, those it refused. */
  sent: number;
  failed: number;
  /** When it started sending, once connected. */
  startNs: string;
  lastSentNs: string;
}

/** What the flood's receiver prints at its end (probe.ts). */
export interface ProbeReceiver {
  count: number;
  maxDelayNs: string;
  delayP50Ns: number;
  delayP99Ns: number;
  lastArrivalNs: string;
  /** Datagrams were still arriving when it stopped (after its bounded wait for a quiet path). */
  cutOff: boolean;
  /** [sentNs, receivedNs] of the latest arrivals. */
  arrivals: Array<[string, string]>;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

/**
 * Of the flood's arrivals ([sentNs, receivedNs]), those delivered after its last datagram was
 * sent (`stopNs`), and the oldest one's age at delivery (0 when none was).
 */
export function floodTailOf(arrivals: ReadonlyArray<readonly [bigint, bigint]>, stopNs: bigint) {
  const after = arrivals.filter(([, at]) => at > stopNs);
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
