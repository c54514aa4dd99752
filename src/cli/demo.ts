// `weft demo` (`npm start`): three hosts in network namespaces on this machine (underlay on a
// shared switch, 198.18.0.0/24), three real agents that find each other by gossip and lease
// subnets of 198.19.0.0/16, two pods per host made through the CNI plugins (weft cni, bridge,
// host-local; behind cni0), pings between every pair of hosts, and
// a live view until Ctrl-C. With --dual-stack the hosts also get an IPv6 underlay (2001:2::/64),
// the agents lease subnets of 2001:2:0:8000::/49 too, and the pings go over both families.
// Everything it creates (namespaces, devices, processes, files) goes
// away at the end, also on Ctrl-C or failure.
import type { BackendType } from "../backends/backend.js";
import { IPV6_BACKENDS } from "../config/net-conf.js";
import { median } from "../bench/stats.js";
import { WeftError } from "../errors.js";
import { LabAgents, type AgentStatus, type LabDataplaneStatus } from "../lab/agents.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6 } from "../lab/cluster.js";
import { pingWhenRouted } from "../lab/traffic.js";
import { formatAddr, type IpAddr } from "../net/ip.js";
import { formatIpv4, formatPrefix } from "../net/ipv4.js";
import { formatIpv6, formatPrefix6 } from "../net/ipv6.js";

export interface DemoOptions {
  backend: BackendType;
  /** Build, check and tear down without the live view. */
  once: boolean;
  hosts?: number;
  /** IPv6 too (the backends that carry it: vxlan, host-gw, wasm-vxlan). */
  dualStack?: boolean;
}

export async function runDemo(o: DemoOptions): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new WeftError("CLI_DEMO_NEEDS_ROOT", "the demo builds network namespaces: run it as root (sudo npm start)");
  let lab: LabCluster | undefined;
  let agents: LabAgents | undefined;
  // One teardown, whoever asks first (the signal handler, the finally): a second caller waits for
  // the first instead of finding the agents and namespaces already being removed and moving on.
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await agents?.stopAll();
      await lab?.destroy();
    })());
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.exitCode = sig === "SIGINT" ? 130 : 143;
    process.stdout.write("\nstopping: agents leave the cluster, namespaces and devices are removed...\n");
    // What is left after a failed teardown goes with the exit hooks (namespaces, temp dirs).
    void cleanup().finally(() => process.exit());
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const count = o.hosts ?? 3;
    say(`building ${count} hosts in network namespaces (backend ${o.backend})`);
    if (o.dualStack && !IPV6_BACKENDS.includes(o.backend)) {
      throw new WeftError(
        "CLI_DEMO_BAD_BACKEND",
        `--dual-stack needs a backend that carries IPv6: --backend ${IPV6_BACKENDS.join(", ")}, not ${o.backend}`,
      );
    }
    lab = await LabCluster.create({ tag: "demo", hosts: count, ipv6: o.dualStack });
    const backend = o.backend === "wasm-vxlan" ? { Type: o.backend, Workers: 1 } : { Type: o.backend };
    const ipv6 = o.dualStack ? { EnableIPv6: true, IPv6Network: formatPrefix6(LAB_POD_NETWORK6) } : {};
    agents = await LabAgents.prepare(lab, () => ({
      Network: formatPrefix(LAB_POD_NETWORK),
      ...ipv6,
      Backend: backend,
    }));
    agents.startAll();
    say(`agents started; waiting for gossip, leases and backends (logs in ${agents.dir})`);
    await agents.waitAllReady();
    // Ready means this node's own side is programmed; peers' leases and records may still be on
    // their way through gossip.
    await Promise.all(
      agents.agents.map((a) =>
        agents!.waitFor(
          a,
          `all ${count - 1} peers known`,
          (s) => s.peers.length === count - 1 && (!o.dualStack || s.peers6?.length === count - 1),
        ),
      ),
    );
    await agents.addPods(2);
    for (const a of agents.agents) {
      const env = await agents.subnetEnv(a);
      const v6 = env.v6 ? ` and ${formatPrefix6(env.v6.subnet)}` : "";
      say(
        `${a.host.name}: subnet ${formatPrefix(env.v4!.subnet)}${v6}, MTU ${env.mtu}, pods ${a.host.pods.map((p) => [formatIpv4(p.addr), ...(p.addr6 !== undefined ? [formatIpv6(p.addr6)] : [])].join(" ")).join(" ")}`,
      );
    }
    let failures = 0;
    for (const a of lab.hosts) {
      for (const b of lab.hosts) {
        if (a === b) continue;
        const targets: IpAddr[] = [b.pods[1].addr, ...(o.dualStack ? [b.pods[1].addr6!] : [])];
        for (const to of targets) {
          const r = await pingWhenRouted(a.pods[0], to, 3);
          failures += r.received === r.sent ? 0 : 1;
          say(
            `ping ${a.pods[0].name} -> ${b.pods[1].name} (${formatAddr(to)}): ${r.received}/${r.sent}${r.rtts.length ? `, median ${median(r.rtts).toFixed(3)} ms` : ""}`,
          );
        }
      }
    }
    if (failures > 0)
      throw new WeftError(
        "CLI_DEMO_PING_FAILED",
        `${failures} host pairs could not ping; agent logs are in ${agents.dir}`,
      );
    say(`every host reaches every other host's pods${o.dualStack ? " over IPv4 and IPv6" : ""}`);
    if (!o.once) await liveView(agents);
  } catch (error) {
    // Stopped by Ctrl-C: the steps under way fail as the agents stop (LAB_AGENT_EXITED), which is
    // no failure of the demo; the handler exits once the teardown is done.
    if (!interrupted) throw error;
  } finally {
    // The handlers stay until the teardown is done: a Ctrl-C during it must not exit under it.
    await cleanup();
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

async function liveView(agents: LabAgents): Promise<void> {
  for (;;) {
    const rows = await Promise.all(agents.agents.map((a) => agents.status(a).catch(() => undefined)));
    const lines = [
      `weft demo — ${new Date().toISOString()} — Ctrl-C stops the agents and removes everything`,
      "",
      row(["host", "subnets", "alive", "peers", "packets out", "packets in", "drops", "kernel ops"]),
    ];
    rows.forEach((s, i) => lines.push(s ? row(cells(s)) : row([agents.agents[i].host.name, "(not answering)"])));
    process.stdout.write("\x1b[2J\x1b[H" + lines.join("\n") + "\n");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function cells(s: AgentStatus): string[] {
  // A dual-stack wasm-vxlan node runs a dataplane per family (weft.1, weft-v6.1): the view sums them.
  const dps = [s.dataplane, s.dataplane6].filter((d) => d !== undefined);
  const sum = (pick: (d: LabDataplaneStatus) => number) =>
    dps.length === 0 ? undefined : String(dps.reduce((n, d) => n + pick(d), 0));
  const drops = (d: LabDataplaneStatus) =>
    [...Object.entries(d.tx.packets), ...Object.entries(d.rx.packets)]
      .filter(([k]) => k !== "FORWARD" && k !== "REPLY")
      .reduce((n, [, v]) => n + v, 0);
  return [
    s.node,
    [s.subnet, s.subnet6].filter((x) => x !== undefined).join(" "),
    String(s.members.filter((m) => m.state === "alive").length),
    [...new Set([...s.peers, ...(s.peers6 ?? [])].map((p) => p.name))].join(","),
    sum((d) => d.tx.packets.FORWARD) ?? "(kernel)",
    sum((d) => d.rx.packets.FORWARD) ?? "(kernel)",
    sum(drops) ?? "-",
    String(s.backendCounters?.kernelCommands ?? "-"),
  ];
}

function row(c: string[]): string {
  const widths = [8, 35, 6, 18, 12, 12, 7, 10];
  return c.map((x, i) => x.padEnd(widths[i] ?? 10)).join(" ");
}

function say(s: string): void {
  process.stdout.write(`[demo] ${s}\n`);
}
