// Real agents in dual-stack mode (EnableIPv6 with IPv6Network 2001:2:0:8000::/49) on a lab with an
// IPv6 underlay: each node leases a subnet of each family, subnet.env is what flanneld writes,
// pods ping over both families, a TCP transfer over IPv6 is exact, a backend swap keeps both
// subnets, and a killed node's IPv6 routes are removed from its peers.
import { readFile, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type AgentStatus, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster, LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { formatIpv6, formatPrefix6, parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";
import { NETWORK } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6); // 2001:2:0:8000::/49
const dualConf = (type: "vxlan" | "host-gw") => ({
  Network: NETWORK,
  EnableIPv6: true,
  IPv6Network: NETWORK6,
  Backend: { Type: type },
});
/** The IPv6 routes to peers' subnets, as `ip -6 route` prints them (this host's own left out). */
const v6Routes = async (a: LabAgent, own: string) =>
  (await a.host.ns.ip(`-6 route show root ${NETWORK6}`))
    .split("\n")
    .filter(
      (l) => l.startsWith("2001:") && !l.startsWith(own.split("/")[0].replace(/::$/, ":")) && !l.includes(" dev cni0"),
    );

describe.skipIf(!canUseNetns())("agents, dual-stack", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let all: LabAgent[];
  const subnets = new Map<string, { v4: string; v6: string }>();
  const others = (a: LabAgent) => all.filter((x) => x !== a);
  const bothFamilies = (s: AgentStatus, backend: string, peers: number) =>
    s.ready &&
    s.backend?.type === backend &&
    s.peers.length === peers &&
    s.peers6?.length === peers &&
    s.peers6.every((p) => p.backend === backend);

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "ads", hosts: 3, ipv6: true });
    agents = await LabAgents.prepare(lab, () => dualConf("vxlan"));
    all = agents.agents;
    agents.startAll();
    await agents.waitAllReady();
    for (const a of all) {
      const s = await agents.waitFor(a, "both families' peers", (st) => bothFamilies(st, "vxlan", 2));
      subnets.set(a.host.name, { v4: s.subnet!, v6: s.subnet6! });
    }
    await agents.addPods(1);
  }, 180_000);

  afterAll(async () => {
    await agents?.stopAll();
    await lab?.destroy();
  });

  it("leases one subnet per family: distinct, inside each network, /24 and /64", () => {
    const v4 = [...subnets.values()].map((s) => s.v4);
    const v6 = [...subnets.values()].map((s) => s.v6);
    expect(new Set(v4).size).toBe(3);
    expect(new Set(v6).size).toBe(3);
    for (const s of v6) expect(parsePrefix6(s).len).toBe(64);
    for (const s of v6) expect(s).toMatch(/^2001:2:0:[89a-f][0-9a-f]{3}::\/64$/);
    for (const s of v4) expect(parsePrefix(s).len).toBe(24);
  });

  it("writes subnet.env as flanneld does in dual-stack, byte for byte (MTU 1500 - 50, as flanneld writes for vxlan in every mode)", async () => {
    for (const a of all) {
      const { v4, v6 } = subnets.get(a.host.name)!;
      const first4 = v4.replace(/\.0\/24$/, ".1/24");
      const first6 = `${formatIpv6(parsePrefix6(v6).addr + 1n)}/64`;
      expect(await readFile(`${a.dir}/subnet.env`, "utf8")).toBe(
        `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${first4}\nFLANNEL_IPV6_NETWORK=${NETWORK6}\nFLANNEL_IPV6_SUBNET=${first6}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
      );
    }
  });

  it("pods ping each other over IPv6 and IPv4, every pair", async () => {
    for (const a of all) {
      for (const b of others(a)) {
        const [p, q] = [a.host.pods[0], b.host.pods[0]];
        expect(q.addr6).toBeDefined();
        // A peer's routes follow its record by up to one programming round: allow a few seconds.
        for (const to of [q.addr6!, q.addr]) {
          // Spaced out: without a route yet, ping fails at once (network unreachable).
          for (let t = 0; t < 10 && (await ping(p, to, { count: 1, timeoutS: 1 })).received === 0; t++)
            await new Promise((r) => setTimeout(r, 500));
          expect(
            (await ping(p, to, { count: 2 })).received,
            `${p.name} -> ${q.name} ${typeof to === "bigint" ? "IPv6" : "IPv4"}`,
          ).toBe(2);
        }
      }
    }
  });

  it("a TCP transfer over IPv6 arrives exactly (byte count and hash)", async () => {
    const { sent, received } = await tcpTransfer(all[0].host.pods[0], all[1].host.pods[0], 8 << 20, 7001, 6);
    expect(received).toEqual(sent);
    expect(sent.bytes).toBe(8 << 20);
  });

  it("SIGHUP swaps every node to host-gw: both subnets kept, IPv6 routes via the peers' IPv6 underlay, pings over both families", async () => {
    for (const a of all) await writeFile(agents.netConfPath(a), JSON.stringify(dualConf("host-gw")));
    for (const a of all) a.process!.kill("SIGHUP");
    for (const a of all) {
      const s = await agents.waitFor(a, "host-gw with both families", (st) => bothFamilies(st, "host-gw", 2));
      expect({ v4: s.subnet, v6: s.subnet6 }).toEqual(subnets.get(a.host.name));
      expect(await a.host.ns.ip("link show")).not.toContain("flannel-v6.1");
    }
    const [a1, a2] = all;
    const v6 = subnets.get(a2.host.name)!.v6;
    expect((await a1.host.ns.ip(`-6 route show ${v6}`)).trim()).toBe(
      `${v6} via ${formatIpv6(a2.host.underlayAddr6!)} dev eth0 metric 1024 pref medium`,
    );
    expect((await ping(a1.host.pods[0], a2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
    expect((await ping(a1.host.pods[0], a2.host.pods[0].addr, { count: 2 })).received).toBe(2);
  });

  it("a killed node's IPv6 routes are removed from its peers once it is declared dead", async () => {
    const [a1, , a3] = all;
    const gone = subnets.get(a3.host.name)!.v6;
    expect((await v6Routes(a1, subnets.get(a1.host.name)!.v6)).some((l) => l.startsWith(gone))).toBe(true);
    await agents.stop(a3, "SIGKILL");
    await agents.waitFor(
      a1,
      `${a3.host.name} gone from both families' peers`,
      (s) => s.peers.length === 1 && s.peers6?.length === 1,
      60_000,
    );
    for (let t = 0; t < 20 && (await v6Routes(a1, subnets.get(a1.host.name)!.v6)).some((l) => l.startsWith(gone)); t++)
      await new Promise((r) => setTimeout(r, 500));
    expect((await v6Routes(a1, subnets.get(a1.host.name)!.v6)).some((l) => l.startsWith(gone))).toBe(false);
  });
});
