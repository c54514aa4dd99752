// Real traffic between lab pods: ping and iperf3 (Debian packages iputils-ping and iperf3), each
// bounded in count and time.
import { spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { WeftError } from "../errors.js";
import { formatAddr, type IpAddr } from "../net/ip.js";
import { formatIpv4 } from "../net/ipv4.js";
import { formatIpv6 } from "../net/ipv6.js";
import type { LabPod } from "./cluster.js";
import type { Netns } from "./netns.js";

export interface PingResult {
  sent: number;
  received: number;
  /** Round-trip times in ms, one per reply. */
  rtts: number[];
  /** ICMP or ICMPv6 destination-unreachable errors that came back instead of replies. */
  unreachable: number;
}

/** The programs run in pods, each with its Debian package. */
const TOOLS = { iperf3: "iperf3", ping: "iputils-ping" } as const;
const INSTALL = `apt-get install ${Object.values(TOOLS).join(" ")}`;

/**
 * Throws LAB_TRAFFIC_TOOL_MISSING unless iperf3 and ping are programs on `path`, where `ip netns
 * exec` looks for them: without them a benchmark would fail every run, one by one, to its end.
 */
export function checkTrafficTools(path = process.env.PATH ?? ""): void {
  const dirs = path.split(delimiter).filter(Boolean);
  const missing = Object.keys(TOOLS).filter((t) => !dirs.some((d) => isProgram(join(d, t))));
  if (missing.length > 0)
    throw new WeftError(
      "LAB_TRAFFIC_TOOL_MISSING",
      `${missing.join(" and ")} not found on PATH (${path}): ${INSTALL}, or put ${missing.length > 1 ? "them" : "it"} on PATH`,
    );
}

function isProgram(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** LAB_TRAFFIC_TOOL_MISSING if `output` is `ip netns exec`'s report of a program it could not run. */
function toolMissing(output: string): WeftError | undefined {
  const m = /exec of "([^"]+)" failed: ([^\n]*)/.exec(output);
  return m ? new WeftError("LAB_TRAFFIC_TOOL_MISSING", `cannot run ${m[1]} in a pod: ${m[2]}; ${INSTALL}`) : undefined;
}

/** `ping -c count` from one pod to another (or any address); never throws for lost packets. */
export async function ping(
  from: LabPod,
  to: IpAddr,
  opts: {
    count?: number;
    intervalS?: number;
    timeoutS?: number;
    size?: number;
    /** Requests sent without waiting for answers (ping -l; with intervalS 0, a flood unslowed by silence). */
    preload?: number;
  } = {},
): Promise<PingResult> {
  if (to === undefined)
    throw new WeftError(
      "LAB_NO_ADDRESS",
      `ping from ${from.name}: no destination address (a pod without an address of that family?)`,
    );
  const count = opts.count ?? 3;
  const args = [
    "ping",
    "-n",
    "-c",
    String(count),
    "-i",
    String(opts.intervalS ?? 0.2),
    "-W",
    String(opts.timeoutS ?? 2),
  ];
  if (opts.size !== undefined) args.push("-s", String(opts.size));
  if (opts.preload !== undefined) args.push("-l", String(opts.preload));
  const out = await capture(
    from.ns.wrap([...args, formatAddr(to)]),
    (count * (opts.intervalS ?? 0.2) + (opts.timeoutS ?? 2)) * 1000 + 5000,
  );
  return pingResult(out.stdout, count);
}

/**
 * ping's output as a PingResult. A reply marked "(DUP!)" is a copy of one already counted (a
 * request delivered twice): counted, it made more replies than requests, and loss negative.
 */
export function pingResult(stdout: string, sent: number): PingResult {
  const replies = stdout.split("\n").filter((l) => !l.includes("(DUP!)"));
  const rtts = replies.flatMap((l) => /time=([\d.]+) ms/.exec(l)?.[1] ?? []).map(Number);
  const unreachable = stdout.match(/Destination (Net Unreachable|unreachable)/g)?.length ?? 0;
  return { sent, received: rtts.length, rtts, unreachable };
}

/**
 * Pings `count` times once a single ping got through, or after `tries` single pings: a peer's
 * routes follow its record by up to one programming round. Spaced out, since without a route yet
 * ping fails at once (network unreachable).
 */
export async function pingWhenRouted(from: LabPod, to: IpAddr, count = 2, tries = 10): Promise<PingResult> {
  for (let t = 0; t < tries && (await ping(from, to, { count: 1, timeoutS: 1 })).received === 0; t++)
    await new Promise((r) => setTimeout(r, 500));
  return ping(from, to, { count });
}

export interface IperfResult {
  sentBytes: number;
  receivedBytes: number;
  seconds: number;
  bitsPerSecond: number;
  retransmits?: number;
  /** UDP only: datagrams the client sent. */
  packets?: number;
  /**
   * UDP only: datagrams the server received (its sum_received: packets up to the highest sequence
   * number seen, less the gaps below it). Not the sent count less iperf3's lost_packets: iperf3
   * counts as lost only gaps below the highest number received, so a lost tail is in neither.
   */
  receivedPackets?: number;
  /**
   * UDP only, with an iperf3 before 3.11 (no sum_received): receivedPackets is the sent count less
   * the gaps iperf3 counted, so a lost tail counts as received (loss reads low); iperf3 >= 3.11
   * counts it.
   */
  lostTailUncounted?: true;
  /**
   * UDP only: datagrams the server pod's kernel received but dropped because a socket's receive
   * buffer was full (the pod's UdpRcvbufErrors over the run) — lost at the receiving application,
   * which did not read fast enough, not on the path.
   */
  receiverSocketDrops?: number;
}

export interface IperfOptions {
  /** Bytes to send (-n); otherwise seconds (-t). */
  bytes?: number;
  seconds?: number;
  streams?: number;
  udp?: boolean;
  /** UDP payload length (-l) and target bitrate (-b, e.g. "0" for unlimited). */
  length?: number;
  bitrate?: string;
  port?: number;
  /** 6: to the server pod's IPv6 address (default 4). */
  family?: 4 | 6;
  /** When the client is killed if it has given no result (default: the run's seconds + 30 s). */
  limitMs?: number;
}

/** How much of each tool's output a LAB_IPERF_NO_RESULT error keeps (the end of it). */
const DETAIL_BYTES = 4096;
const tail = (text: string) => (text.length > DETAIL_BYTES ? `…${text.slice(-DETAIL_BYTES)}` : text);

/**
 * Each run listens on the next port of 5201..5300 (unless `port` is given): after a UDP flood,
 * datagrams still queued along the path (tens of milliseconds of them, or more, in the userspace
 * dataplane's TUN queues and socket buffers) would otherwise reach the next run's server, which
 * takes the first datagram's sender for its client, and iperf3 does not retry its UDP set-up.
 */
let runs = 0;

/** Client options of every run: a control connection not set up within 5 s is an error. */
export const IPERF_TIMEOUTS = ["--connect-timeout", "5000"];
/** TCP only (TCP_USER_TIMEOUT on the data sockets): data unacknowledged for 10 s is an error. */
export const IPERF_TCP_TIMEOUTS = ["--snd-timeout", "10000"];

/**
 * What is read of iperf3's JSON result (`-J`): `sum_sent` and `sum_received` (iperf3 >= 3.11 has
 * both for UDP too); before 3.11 (Debian 11's and Ubuntu 22.04's 3.9) UDP has only `sum`.
 */
interface IperfSum {
  bytes: number;
  seconds: number;
  bits_per_second: number;
  retransmits: number;
  lost_packets: number;
  packets: number;
}
export interface IperfJson {
  error?: string;
  end: { sum_sent?: IperfSum; sum_received?: IperfSum; sum?: IperfSum };
}

/** One iperf3 run: a one-shot server in `server`, the client in `client`. */
export async function iperf(server: LabPod, client: LabPod, o: IperfOptions): Promise<IperfResult> {
  const port = String(o.port ?? 5201 + (runs++ % 100));
  if (o.family === 6 && server.addr6 === undefined)
    throw new WeftError("LAB_NO_ADDRESS", `iperf3 over IPv6 to ${server.name}: it has no IPv6 address`);
  const addr = o.family === 6 ? formatIpv6(server.addr6!) : formatIpv4(server.addr);
  const [cmd, ...argv] = server.ns.wrap(["iperf3", "-s", "-1", "--forceflush", "-B", addr, "-p", port]);
  const srv = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
  // The server's whole output (its per-second reports, its errors), its end kept for a stall's detail.
  let serverOut = "";
  const keep = (d: Buffer) => (serverOut = tail(serverOut + d));
  srv.stdout.on("data", keep);
  srv.stderr.on("data", keep);
  try {
    await serverListening(srv, 10_000, () => serverOut);
    const dropsBefore = o.udp ? (await udpStats(server.ns)).rcvbufErrors : 0;
    const args = ["iperf3", "-c", addr, "-p", port, "-J", "-P", String(o.streams ?? 1)];
    if (o.bytes !== undefined) args.push("-n", String(o.bytes));
    else args.push("-t", String(o.seconds ?? 5));
    // A control connection that cannot be set up, or TCP data unacknowledged for 10 s, become
    // iperf3's own error (LAB_IPERF_TIMED_OUT, naming the phase) long before the kill below.
    args.push(...IPERF_TIMEOUTS);
    if (o.udp) args.push("-u", "-b", o.bitrate ?? "0", "-l", String(o.length ?? 1400));
    else args.push(...IPERF_TCP_TIMEOUTS);
    const limitMs = o.limitMs ?? (o.seconds ?? 60) * 1000 + 30_000;
    const started = Date.now();
    // Before the kill: both ends' sockets (state, timers, queues), which tell a stalled path
    // (unacknowledged data, backoff) from a stalled process (data queued, unread).
    let sockets = "";
    const { stdout, stderr, killed } = await capture(client.ns.wrap(args), limitMs, async () => {
      const ss = (ns: Netns) => ns.exec(["ss", "-tino"], { timeoutMs: 5000 }).catch((e: Error) => e.message);
      const [c, s] = await Promise.all([ss(client.ns), ss(server.ns)]);
      sockets = `client ss -tino:\n${tail(c)}\nserver ss -tino:\n${tail(s)}`;
    });
    let j: IperfJson;
    try {
      j = JSON.parse(stdout);
    } catch {
      const elapsedS = ((Date.now() - started) / 1000).toFixed(1);
      throw new WeftError(
        "LAB_IPERF_NO_RESULT",
        `iperf3 ${o.udp ? "UDP" : "TCP"} ${client.name} -> ${server.name} gave no result ${killed ? `within its limit of ${limitMs / 1000} s (killed after ${elapsedS} s)` : `(exited after ${elapsedS} s)`}; the error's detail (in a bench report's JSON) holds both ends' sockets and the iperf3s' output`,
        {
          detail: `client: ${args.join(" ")}\n${sockets || "(no sockets captured: not killed)"}\nserver output:\n${serverOut}\nclient stderr:\n${tail(stderr)}\nclient stdout:\n${tail(stdout)}`,
        },
      );
    }
    if (j.error) {
      // ETIMEDOUT is one of the timeouts above giving up on a stalled path (a retry may get
      // through, bench/workloads.ts); any other error is the run's own.
      const stalled = /timed out/i.test(j.error);
      throw new WeftError(
        stalled ? "LAB_IPERF_TIMED_OUT" : "LAB_IPERF_FAILED",
        `iperf3 ${client.name} -> ${server.name}: ${j.error}${stalled ? ` (${[...IPERF_TIMEOUTS, ...(o.udp ? [] : IPERF_TCP_TIMEOUTS)].join(" ")}: the path stalled)` : ""}`,
      );
    }
    const r = iperfTotals(j, o.udp ?? false);
    return o.udp ? { ...r, receiverSocketDrops: (await udpStats(server.ns)).rcvbufErrors - dropsBefore } : r;
  } finally {
    srv.kill("SIGKILL");
  }
}

/**
 * The totals of an iperf3 client's JSON result: for TCP the receiver's bytes and rate and the
 * sender's retransmits; for UDP the datagrams sent (sum_sent) and received (sum_received), or
 * with an iperf3 before 3.11, which has only `sum` (sent, and the gaps below the highest sequence
 * received), sent less those gaps, `lostTailUncounted`.
 */
export function iperfTotals(j: IperfJson, udp: boolean): IperfResult {
  const { sum_sent: sent, sum_received: received, sum } = j.end;
  if (udp && !(sent && received) && sum) {
    const receivedPackets = sum.packets - sum.lost_packets;
    return {
      sentBytes: sum.bytes,
      // The bytes received are not in `sum`: the sent ones' share that arrived.
      receivedBytes: sum.packets > 0 ? (sum.bytes * receivedPackets) / sum.packets : 0,
      seconds: sum.seconds,
      bitsPerSecond: sum.packets > 0 ? (sum.bits_per_second * receivedPackets) / sum.packets : 0,
      packets: sum.packets,
      receivedPackets,
      lostTailUncounted: true,
    };
  }
  if (!sent || !received)
    throw new WeftError(
      "LAB_IPERF_NO_RESULT",
      `iperf3's result has no sum_sent and sum_received${udp ? " nor sum" : ""}: is it iperf3 3.x (iperf3 --version)?`,
    );
  if (udp)
    return {
      sentBytes: sent.bytes,
      receivedBytes: received.bytes,
      seconds: received.seconds,
      bitsPerSecond: received.bits_per_second,
      packets: sent.packets,
      receivedPackets: received.packets - received.lost_packets,
    };
  return {
    sentBytes: sent.bytes,
    receivedBytes: received.bytes,
    seconds: received.seconds,
    bitsPerSecond: received.bits_per_second,
    retransmits: sent.retransmits,
  };
}

/** A namespace's UDP counters, both families summed (/proc/net/snmp and snmp6 inside it). */
export interface UdpStats {
  /** Datagrams applications read (Linux counts them in recvmsg, not on arrival). */
  inDatagrams: number;
  /** Datagrams dropped because the receiving socket's buffer was full. */
  rcvbufErrors: number;
}

export async function udpStats(ns: Netns): Promise<UdpStats> {
  const [snmp, v6] = await Promise.all([snmpTable(ns), ns.exec(["cat", "/proc/net/snmp6"])]);
  // snmp6: "Udp6InDatagrams   123" lines.
  const row6 = new Map(
    v6
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .map(([k, v]) => [k, Number(v)] as const),
  );
  const both = (key: string) => snmpValue(snmp, "Udp", key) + (row6.get(`Udp6${key}`) ?? 0);
  return { inDatagrams: both("InDatagrams"), rcvbufErrors: both("RcvbufErrors") };
}

/** A counter of /proc/net/snmp in `ns` (IPv4 and protocol-wide), e.g. ("Tcp", "InCsumErrors"). */
export async function snmpCounter(ns: Netns, proto: string, name: string): Promise<number> {
  return snmpValue(await snmpTable(ns), proto, name);
}

function snmpTable(ns: Netns): Promise<string> {
  return ns.exec(["cat", "/proc/net/snmp"]);
}

/** /proc/net/snmp holds per protocol a line of names, then one of values, both "Proto: ...". */
function snmpValue(table: string, proto: string, name: string): number {
  const lines = table.split("\n").filter((l) => l.startsWith(`${proto}:`));
  const at = lines[0]?.split(/\s+/).indexOf(name) ?? -1;
  if (at < 0) throw new Error(`no ${proto} ${name} in /proc/net/snmp`);
  return Number(lines[1].split(/\s+/)[at]);
}

/** Resolves when iperf3 says it listens (a fixed sleep is too short on a loaded machine). */
function serverListening(srv: ReturnType<typeof spawn>, timeoutMs: number, output: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(
      () =>
        reject(
          new WeftError(
            "LAB_IPERF_SERVER_TIMEOUT",
            `iperf3 server did not start listening within ${timeoutMs / 1000} s`,
          ),
        ),
      timeoutMs,
    );
    srv.stdout!.on("data", (d) => {
      seen += d;
      if (seen.includes("Server listening")) {
        clearTimeout(timer);
        resolve();
      }
    });
    // On close, not exit: by then all it wrote has been read.
    srv.once("close", (code) => {
      clearTimeout(timer);
      const out = output().trim();
      reject(
        toolMissing(out) ??
          new WeftError(
            "LAB_IPERF_SERVER_EXITED",
            `iperf3 server exited (${code}) before listening: ${out || "(no output)"}`,
          ),
      );
    });
  });
}

/**
 * Runs a tool to its end, or kills it after timeoutMs (once `beforeKill` has looked around).
 * A killed tool resolves with what it wrote (`killed`); one that failed with no output rejects.
 */
function capture(
  argv: string[],
  timeoutMs: number,
  beforeKill: () => Promise<void> = async () => {},
): Promise<{ stdout: string; stderr: string; code: number; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let killed = false;
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(
      () =>
        void beforeKill().finally(() => {
          killed = true;
          child.kill("SIGKILL");
        }),
      timeoutMs,
    );
    child.on("error", (e) =>
      reject(
        new WeftError(
          "LAB_TRAFFIC_TOOL_MISSING",
          `cannot run ${argv.join(" ")}: ${e.message}; install iperf3 and iputils-ping`,
          { cause: e },
        ),
      ),
    );
    // On close, not exit: by then all it wrote has been read, which decides missing or failed.
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0 && !stdout && !killed)
        reject(
          toolMissing(stderr) ??
            new WeftError("LAB_TRAFFIC_TOOL_FAILED", `${argv.join(" ")} exited ${code}: ${stderr.trim()}`),
        );
      else resolve({ stdout, stderr, code: code ?? -1, killed });
    });
  });
}
