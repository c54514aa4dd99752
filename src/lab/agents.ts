// Real weft agents on the hosts of a lab cluster, each a separate process inside its host's
// namespace, with its own state dir, subnet file and log under one work dir. Used by the demo,
// `weft bench` and the agent tests. Agents are stopped with SIGTERM (graceful leave) or killed.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseSubnetEnv, type SubnetEnv } from "../agent/subnet-env.js";
import { agentRequest } from "../cli/agent-client.js";
import { KEY_BYTES } from "../control/gossip/keyring.js";
import type { OffloadState } from "../dataplane/offload.js";
import { WeftError } from "../errors.js";
import { formatIpv4 } from "../net/ipv4.js";
import { formatIpv6 } from "../net/ipv6.js";
import { projectFile } from "../paths.js";
import type { LabCluster, LabHost } from "./cluster.js";
import { makeTempDir, removeTempDir } from "./temp-dirs.js";

export const LAB_GOSSIP_PORT = 7946;

export interface LabAgent {
  readonly host: LabHost;
  /** Work dir; holds subnet.env, agent.log and, unless `stateDir` says otherwise, the state. */
  readonly dir: string;
  /** The agent's --state-dir (lease ring, VTEP MAC, weft.sock); `dir` unless set before a start. */
  stateDir: string;
  /** Start it as an unprivileged container runs it: /proc/sys read-only (a read-only bind mount in
   *  the mount namespace `ip netns exec` gives the agent alone). */
  readOnlyProcSys?: boolean;
  /** Environment variables of its process beside the test's own (a PATH without a tool). */
  env?: Record<string, string>;
  /** Its --iface: the underlay interface's name unless set (an address, as the DaemonSet's WEFT_IFACE). */
  iface?: string;
  /** A file descriptor its stdout goes to instead of agent.log (a pipe nobody reads); stderr stays. */
  stdout?: number;
  process?: ChildProcess;
  /** Resolves once the process is gone and everything it printed is in agent.log. */
  logClosed?: Promise<void>;
}

/** A userspace dataplane's counters as the status shows them; `peers` by node name (what its route table holds). */
export interface LabDataplaneStatus {
  /** offloadSegments: segments cut from super-packets (tx) or merged into them (rx). */
  tx: { packets: Record<string, number>; offloadSegments: number };
  rx: { packets: Record<string, number>; offloadSegments: number };
  peers: Record<string, { txPackets: number; rxPackets: number }>;
  offload: OffloadState;
  /** Size of the dataplane's shared hot-path memory. */
  memoryBytes: number;
}

/** Whether an agent's process still runs: a crash or a kill leaves exitCode null and signalCode set. */
export function running(p: ChildProcess | undefined): p is ChildProcess {
  return !!p && p.exitCode === null && p.signalCode === null;
}

/** How an agent's process ended, for messages ("was killed by SIGKILL", "exited with 1"). */
export function exitText(p: ChildProcess | undefined): string {
  if (!p) return "was never started";
  if (p.signalCode) return `was killed by ${p.signalCode}`;
  if (p.exitCode !== null) return `exited with ${p.exitCode}`;
  return p.pid === undefined ? "could not be started" : "still runs";
}

export interface AgentStatus {
  node: string;
  /** package.json's version and the commit dist/ was built from ("<hash>", "<hash>-dirty" or "unknown"). */
  version: string;
  commit: string;
  ready: boolean;
  subnet?: string;
  /** With IPv6 on: the IPv6 lease and IPv6 peers (subnet, peers and underlay are IPv4's: absent or empty while IPv4 is off). */
  subnet6?: string;
  underlay6?: string;
  peers6?: Array<{ name: string; subnet: string; underlay: string; backend: string }>;
  /** nextAttemptAt and joinedAt: ISO times, as `weft status` shows them. */
  join: { state: string; targets: string[]; failedRounds: number; nextAttemptAt?: string; joinedAt?: string };
  reserved: Array<{ node: string; slots: number; subnet: string | null; reclaimAt: string | null; condemned: boolean }>;
  settings: { reclaimGrace: string; lease: { reclaimGraceMs: number }; backend: Record<string, unknown> };
  mtu?: number;
  gossipKeys: { primary: string; installed: string[] };
  backend?: { type: string; vtepMac?: string; port?: number };
  backend6?: { type: string; vtepMac?: string; port?: number };
  peers: Array<{ name: string; subnet: string; underlay: string; backend: string }>;
  members: Array<{ name: string; addr?: string; state: string }>;
  underlay?: string;
  dataplane?: LabDataplaneStatus;
  /** A dual-stack node's IPv6 dataplane (wasm-vxlan). */
  dataplane6?: LabDataplaneStatus;
  backendCounters?: { kernelCommands: number; kernelErrors: number; peersUnreachable: number; driftRepairs: number };
  /** Kernel drops on the userspace dataplanes' sockets, by family of the dataplane. */
  socketDrops?: { sockets: number; drops: number; families: Array<{ family: 4 | 6; sockets: number; drops: number }> };
}

export class LabAgents {
  private constructor(
    readonly lab: LabCluster,
    /** Work dir: key file, net-conf.json per host, the agents' dirs. */
    readonly dir: string,
    readonly agents: LabAgent[],
    private readonly keyFile: string,
    private readonly members: number,
    /** Gossip over IPv6 (agents whose config has EnableIPv4 false): join lists name IPv6 underlay addresses. */
    private readonly gossip6: boolean,
  ) {}

  /** Writes the key and one net-conf.json per host (`netConf(host)`), but starts nothing yet.
   *  `members`: how many of the hosts (the first ones) form the cluster: join lists and subnet
   *  seeds name only them (default all); the others are started with explicit flags.
   *  `gossip6`: the agents gossip over IPv6 (IPv6-only configs), so join lists name the hosts'
   *  IPv6 underlay addresses. */
  static async prepare(
    lab: LabCluster,
    netConf: (host: LabHost) => object,
    members = lab.hosts.length,
    gossip6 = false,
  ): Promise<LabAgents> {
    const dir = makeTempDir("weft-lab-");
    const keyFile = join(dir, "cluster.key");
    const agents: LabAgent[] = [];
    try {
      await writeFile(keyFile, randomBytes(KEY_BYTES).toString("base64") + "\n", { mode: 0o600 });
      for (const host of lab.hosts) {
        const agentDir = join(dir, host.name);
        await mkdir(agentDir, { recursive: true });
        await writeFile(join(agentDir, "net-conf.json"), JSON.stringify(netConf(host), null, 2));
        agents.push({ host, dir: agentDir, stateDir: agentDir });
      }
    } catch (error) {
      removeTempDir(dir);
      throw error;
    }
    return new LabAgents(lab, dir, agents, keyFile, members, gossip6);
  }

  /** The net-conf.json of an agent (to change it before a restart or SIGHUP). */
  netConfPath(a: LabAgent): string {
    return join(a.dir, "net-conf.json");
  }

  /** Starts an agent process; the other cluster members (or `join`) are its --join list and all
   *  cluster members are subnet seeds. */
  start(a: LabAgent, extra: string[] = [], joinTargets?: LabAgent[]): void {
    if (running(a.process)) throw new WeftError("LAB_AGENT_RUNNING", `${a.host.name}'s agent is already running`);
    const cluster = this.agents.slice(0, this.members);
    const targets = (joinTargets ?? cluster.filter((x) => x !== a)).map((x) => this.gossipAddr(x));
    const args = [
      projectFile("dist", "src", "cli", "main.js"),
      "agent",
      "--net-config",
      this.netConfPath(a),
      "--iface",
      a.iface ?? a.host.underlayIf,
      "--key-file",
      this.keyFile,
      "--state-dir",
      a.stateDir,
      "--subnet-file",
      this.subnetFile(a),
      "--node-name",
      a.host.name,
      ...(targets.length > 0 ? ["--join", targets.join(",")] : []),
      "--subnet-seeds",
      cluster.map((x) => x.host.name).join(","),
      "--gossip-port",
      String(LAB_GOSSIP_PORT),
      ...extra,
    ];
    const agent = [process.execPath, ...args];
    const [cmd, ...argv] = a.host.ns.wrap(
      a.readOnlyProcSys ? ["sh", "-c", 'mount --bind -o ro /proc/sys /proc/sys && exec "$@"', "sh", ...agent] : agent,
    );
    // The agent writes its log file itself: through a pipe to this process, an agent whose
    // parent died would block on a full pipe and never see its SIGTERM.
    const log = openSync(join(a.dir, "agent.log"), "a");
    const child = spawn(cmd, argv, { stdio: ["ignore", a.stdout ?? log, log], env: { ...process.env, ...a.env } });
    closeSync(log);
    a.logClosed = new Promise((r) => child.once("exit", () => r()));
    a.process = child;
  }

  /** Where an agent gossips: host:port, an IPv6 host in brackets. */
  gossipAddr(a: LabAgent): string {
    return this.gossip6
      ? `[${formatIpv6(a.host.underlayAddr6!)}]:${LAB_GOSSIP_PORT}`
      : `${formatIpv4(a.host.underlayAddr)}:${LAB_GOSSIP_PORT}`;
  }

  startAll(extra: string[] = []): void {
    for (const a of this.agents) this.start(a, extra);
  }

  /** Waits until /readyz answers 200 (lease held, backend programmed, subnet.env written). */
  async waitReady(a: LabAgent, timeoutMs = 90_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (a.process && !running(a.process)) {
        throw new WeftError(
          "LAB_AGENT_EXITED",
          `${a.host.name}'s agent ${exitText(a.process)}; its last log lines:\n${await this.logTail(a)}`,
        );
      }
      if (
        await agentRequest(a.stateDir, "GET", "/readyz").then(
          () => true,
          () => false,
        )
      )
        return;
      if (Date.now() > until)
        throw new WeftError(
          "LAB_AGENT_TIMEOUT",
          `${a.host.name} not ready after ${timeoutMs / 1000} s; last log lines:\n${await this.logTail(a)}`,
        );
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  async waitAllReady(timeoutMs = 90_000): Promise<void> {
    await Promise.all(this.agents.map((a) => this.waitReady(a, timeoutMs)));
  }

  /** Polls until `check` holds for the agent's status, or fails with what it last saw. */
  async waitFor(
    a: LabAgent,
    what: string,
    check: (s: AgentStatus) => boolean,
    timeoutMs = 60_000,
  ): Promise<AgentStatus> {
    const until = Date.now() + timeoutMs;
    let last: AgentStatus | undefined;
    for (;;) {
      last = await this.status(a).catch(() => last);
      if (last && check(last)) return last;
      if (Date.now() > until)
        throw new WeftError(
          "LAB_WAIT_TIMEOUT",
          `${a.host.name}: ${what} did not happen within ${timeoutMs / 1000} s; last status: ${JSON.stringify(last)}`,
        );
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  status(a: LabAgent): Promise<AgentStatus> {
    return agentRequest(a.stateDir, "GET", "/status") as Promise<AgentStatus>;
  }

  /** The agent's subnet.env, parsed. */
  async subnetEnv(a: LabAgent): Promise<SubnetEnv & { text: string }> {
    const text = await readFile(this.subnetFile(a), "utf8");
    return { ...parseSubnetEnv(text), text };
  }

  /** The subnet.env the agent writes (what the hosts' CNI plugin reads). */
  subnetFile(a: LabAgent): string {
    return join(a.dir, "subnet.env");
  }

  /** Gives every host `count` pods through CNI, from its agent's subnet.env. */
  async addPods(count: number): Promise<void> {
    for (const a of this.agents) await this.lab.addPodsFromSubnetFile(a.host, this.subnetFile(a), count);
  }

  /** SIGTERM (graceful leave) or SIGKILL (a crash); resolves when the process is gone. */
  async stop(a: LabAgent, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = a.process;
    if (!running(child)) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** SIGHUP: the agent re-reads its key file and net-conf.json (a changed Backend is swapped in). */
  reload(a: LabAgent): void {
    if (!running(a.process)) throw new WeftError("LAB_AGENT_NOT_RUNNING", `${a.host.name}'s agent is not running`);
    a.process.kill("SIGHUP");
  }

  /** Resolves with the exit code once the agent's process is gone and its log complete (null when a signal ended it). */
  async exited(a: LabAgent, timeoutMs = 30_000): Promise<number | null> {
    const child = a.process;
    if (!child) throw new WeftError("LAB_AGENT_NOT_RUNNING", `${a.host.name}'s agent was never started`);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new WeftError("LAB_AGENT_TIMEOUT", `${a.host.name}'s agent still runs after ${timeoutMs / 1000} s`)),
        timeoutMs,
      );
    });
    await Promise.race([a.logClosed, timedOut]).finally(() => clearTimeout(timer));
    return child.exitCode;
  }

  /** Bytes in the agent's log so far (to look only at what comes later, see errorLines). */
  async logSize(a: LabAgent): Promise<number> {
    return (await readFile(join(a.dir, "agent.log")).catch(() => Buffer.alloc(0))).length;
  }

  /** The agent's log lines at error level or above (pino's 50), parsed; from byte `since` on. */
  async errorLines(a: LabAgent, since = 0): Promise<Array<{ level: number; msg: string; code?: string }>> {
    const text = (await readFile(join(a.dir, "agent.log")).catch(() => Buffer.alloc(0)))
      .subarray(since)
      .toString("utf8");
    return text.split("\n").flatMap((line) => {
      try {
        const rec = JSON.parse(line) as { level: number; msg: string; code?: string };
        return rec.level >= 50 ? [rec] : [];
      } catch {
        return []; // not a log record (e.g. a crash trace; the exit code tells)
      }
    });
  }

  async logTail(a: LabAgent, lines = 8): Promise<string> {
    return (await readFile(join(a.dir, "agent.log"), "utf8").catch(() => ""))
      .trim()
      .split("\n")
      .slice(-lines)
      .join("\n");
  }

  /** Stops every agent and removes the work dir (the lab itself is the caller's). */
  async stopAll(): Promise<void> {
    await Promise.all(this.agents.map((a) => this.stop(a)));
    removeTempDir(this.dir);
  }
}
