// `weft demo` (`npm start`): three hosts in network namespaces on this machine (underlay on a
// shared switch, 198.18.0.0/24), three real agents that find each other by gossip and lease
// subnets of 198.19.0.0/16, two pods per host behind cni0, pings between every pair of hosts, and
// a live view until Ctrl-C. Everything it creates (namespaces, devices, processes, files) goes
// away at the end, also on Ctrl-C or failure.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { BackendType } from "../backends/backend.js";
import { KEY_BYTES } from "../control/gossip/keyring.js";
import { WeftError } from "../errors.js";
import { LabCluster, LAB_POD_NETWORK, type LabHost } from "../lab/cluster.js";
import { ping } from "../lab/traffic.js";
import { formatIpv4, formatPrefix } from "../net/ipv4.js";
import { parseSubnetEnv } from "../agent/subnet-env.js";
import { projectFile } from "../paths.js";
import { agentRequest } from "./agent-client.js";

export interface DemoOptions {
  backend: BackendType;
  /** Build, check and tear down without the live view. */
  once: boolean;
  hosts?: number;
}

interface DemoHost {
  lab: LabHost;
  dir: string;
  agent: ChildProcess;
}

const GOSSIP_PORT = 7946;

export async function runDemo(o: DemoOptions): Promise<void> {
  if (process.getuid?.() !== 0) throw new WeftError("DEMO_NEEDS_ROOT", "the demo builds network namespaces: run it as root (sudo npm start)");
  const dir = await mkdtemp(join(tmpdir(), "weft-demo-"));
  let lab: LabCluster | undefined;
  const hosts: DemoHost[] = [];
  const cleanup = async () => {
    await Promise.all(hosts.map((h) => stopAgent(h.agent)));
    await lab?.destroy();
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = () => {
    process.stdout.write("\nstopping: agents leave, namespaces and devices are removed...\n");
    void cleanup().then(() => process.exit(0));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const count = o.hosts ?? 3;
    say(`building ${count} hosts in network namespaces (backend ${o.backend})`);
    lab = await LabCluster.create({ tag: "demo", hosts: count });
    const keyFile = join(dir, "cluster.key");
    await writeFile(keyFile, randomBytes(KEY_BYTES).toString("base64") + "\n", { mode: 0o600 });
    const netConf = join(dir, "net-conf.json");
    const backend = o.backend === "wasm-vxlan" ? { Type: o.backend, Workers: 1 } : { Type: o.backend };
    await writeFile(netConf, JSON.stringify({ Network: formatPrefix(LAB_POD_NETWORK), Backend: backend }, null, 2));
    const seeds = lab.hosts.map((h) => h.name).join(",");
    for (const h of lab.hosts) {
      const hostDir = join(dir, h.name);
      const join0 = lab.hosts.filter((x) => x !== h).map((x) => `${formatIpv4(x.underlayAddr)}:${GOSSIP_PORT}`).join(",");
      const args = [
        projectFile("dist", "src", "cli", "main.js"), "agent", "--net-config", netConf, "--iface", h.underlayIf, "--key-file", keyFile,
        "--state-dir", hostDir, "--subnet-file", join(hostDir, "subnet.env"), "--node-name", h.name, "--join", join0, "--subnet-seeds", seeds,
      ];
      hosts.push({ lab: h, dir: hostDir, agent: await startAgent(h, args, hostDir) });
    }
    say("agents started; waiting for gossip to converge and every lease (logs in " + dir + ")");
    await Promise.all(hosts.map((h) => waitReady(h, 90_000)));
    for (const h of hosts) {
      const { subnet, mtu } = parseSubnetEnv(await readFile(join(h.dir, "subnet.env"), "utf8"));
      await lab.addPods(h.lab, subnet, 2, mtu);
      say(`${h.lab.name}: subnet ${formatPrefix(subnet)}, MTU ${mtu}, pods ${h.lab.pods.map((p) => formatIpv4(p.addr)).join(" ")}`);
    }
    let failures = 0;
    for (const a of hosts) {
      for (const b of hosts) {
        if (a === b) continue;
        const r = await ping(a.lab.pods[0], b.lab.pods[1].addr, { count: 3 });
        failures += r.received === r.sent ? 0 : 1;
        say(`ping ${a.lab.pods[0].name} -> ${b.lab.pods[1].name} (${formatIpv4(b.lab.pods[1].addr)}): ${r.received}/${r.sent}${r.rtts.length ? `, ${median(r.rtts).toFixed(3)} ms` : ""}`);
      }
    }
    if (failures > 0) throw new WeftError("DEMO_PING_FAILED", `${failures} host pairs could not ping; see the agent logs in ${dir}`);
    say("every host reaches every other host's pods");
    if (o.once) return;
    await liveView(hosts);
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    await cleanup();
  }
}

async function startAgent(h: LabHost, args: string[], dir: string): Promise<ChildProcess> {
  await import("node:fs/promises").then((fs) => fs.mkdir(dir, { recursive: true }));
  const [cmd, ...argv] = h.ns.wrap([process.execPath, ...args]);
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(join(dir, "agent.log"));
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  return child;
}

async function stopAgent(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

async function waitReady(h: DemoHost, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (h.agent.exitCode !== null) {
      const tail = (await readFile(join(h.dir, "agent.log"), "utf8").catch(() => "")).trim().split("\n").slice(-5).join("\n");
      throw new WeftError("DEMO_AGENT_EXITED", `the agent of ${h.lab.name} exited with ${h.agent.exitCode}; its last log lines:\n${tail}`);
    }
    const ok = await agentRequest(h.dir, "GET", "/readyz").then(() => true, () => false);
    if (ok) return;
    if (Date.now() > until) throw new WeftError("DEMO_TIMEOUT", `${h.lab.name} not ready after ${timeoutMs / 1000} s; see ${join(h.dir, "agent.log")}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

interface Status {
  node: string;
  subnet?: string;
  peers: Array<{ name: string }>;
  members: Array<{ state: string }>;
  dataplane?: { tx: { packets: Record<string, number> }; rx: { packets: Record<string, number> } };
  backendCounters?: { kernelCommands: number; kernelErrors: number };
}

async function liveView(hosts: DemoHost[]): Promise<void> {
  say("live view — Ctrl-C stops the agents and removes everything");
  for (;;) {
    const rows = await Promise.all(hosts.map((h) => agentRequest(h.dir, "GET", "/status").then((s) => s as Status, () => undefined)));
    const lines = [`weft demo — ${new Date().toISOString()}  (Ctrl-C to stop)`, "", pad(["host", "subnet", "members", "peers", "packets out", "packets in", "drops", "kernel ops"])];
    for (const [i, s] of rows.entries()) {
      if (!s) {
        lines.push(pad([hosts[i].lab.name, "(not answering)"]));
        continue;
      }
      const dp = s.dataplane;
      const drops = dp ? Object.entries({ ...dp.tx.packets }).concat(Object.entries(dp.rx.packets)).filter(([k]) => k !== "FORWARD" && k !== "REPLY").reduce((n, [, v]) => n + v, 0) : 0;
      lines.push(pad([
        s.node, s.subnet ?? "-", String(s.members.filter((m) => m.state === "alive").length), s.peers.map((p) => p.name).join(","),
        dp ? String(dp.tx.packets.FORWARD) : "kernel", dp ? String(dp.rx.packets.FORWARD) : "kernel", dp ? String(drops) : "-",
        String(s.backendCounters?.kernelCommands ?? "-"),
      ]));
    }
    process.stdout.write("\x1b[2J\x1b[H" + lines.join("\n") + "\n");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function pad(cells: string[]): string {
  const widths = [8, 16, 8, 18, 12, 12, 7, 10];
  return cells.map((c, i) => c.padEnd(widths[i] ?? 10)).join(" ");
}

function say(s: string): void {
  process.stdout.write(`[demo] ${s}\n`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
