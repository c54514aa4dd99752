// Real agents in dual-stack mode (EnableIPv6 with IPv6Network 2001:2:0:8000::/49) on a lab with an
// IPv6 underlay: each node leases a subnet of each family, subnet.env is what flanneld writes,
// pods ping over both families, TCP transfers are exact, a backend swap keeps both subnets, and a
// killed node's IPv6 routes are removed from its peers. Twice: all kernel vxlan (swapped to
// host-gw), and kernel vxlan mixed with wasm-vxlan (one kernel node, two wasm-vxlan nodes: every
// pod pair crosses kernel -> wasm, wasm -> kernel or wasm -> wasm, IPv4 over the IPv4 underlay and
// IPv6 over the IPv6 one, flannel.1/flannel-v6.1 against weft.1/weft-v6.1), swapped the other way
// round (the kernel node to wasm-vxlan, the wasm-vxlan nodes to vxlan).
import { readFile, writeFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import type { AgentStatus, LabAgent } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv4, parsePrefix } from "../../src/net/ipv4.js";
import { formatIpv6, formatPrefix6, parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, eventually, expectExactTcp, NETWORK, udpSockets } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6); // 2001:2:0:8000::/49
type Type = "vxlan" | "host-gw" | "wasm-vxlan";
const dualConf = (type: Type) => ({
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

/** Each mode: the lab's tag, the backend of each host at the start, and after the SIGHUP swap. */
const MODES: ReadonlyArray<{ name: string; tag: string; start: readonly Type[]; swapped: readonly Type[] }> = [
  { name: "vxlan", tag: "ads", start: ["vxlan", "vxlan", "vxlan"], swapped: ["host-gw", "host-gw", "host-gw"] },
  { name: "host-gw", tag: "adh", start: ["host-gw", "host-gw", "host-gw"], swapped: ["vxlan", "vxlan", "vxlan"] },
  {
    name: "kernel vxlan mixed with wasm-vxlan",
    tag: "adw",
    start: ["vxlan", "wasm-vxlan", "wasm-vxlan"],
    swapped: ["wasm-vxlan", "vxlan", "vxlan"],
  },
];

describe.skipIf(!canUseNetns()).each(MODES)("agents, dual-stack, $name", (mode) => {
  /** Node name -> its backend, per phase. */
  const backendOf = (types: readonly Type[]) => new Map(env.all.map((a, i) => [a.host.name, types[i]]));
  const bothFamilies = (s: AgentStatus, types: readonly Type[], peers: number) => {
    const of = backendOf(types);
    return (
      s.ready &&
      s.backend?.type === of.get(s.node) &&
      s.backend6?.type === of.get(s.node) &&
      s.peers.length === peers &&
      s.peers6?.length === peers &&
      s.peers.every((p) => p.backend === of.get(p.name)) &&
      s.peers6.every((p) => p.backend === of.get(p.name))
    );
  };
  /**
   * Between namespaces nothing computes a kernel vxlan device's offloaded inner checksums (a real
   * NIC would): a kernel peer accepts such packets on trust, a userspace socket sees only the bytes
   * (as in test/dataplane/interop.test.ts). So the kernel nodes' devices checksum in software.
   */
  const checksumInSoftware = async (types: readonly Type[]) => {
    if (!types.includes("wasm-vxlan")) return;
    for (const [i, a] of env.all.entries())
      if (types[i] === "vxlan")
        for (const dev of ["flannel.1", "flannel-v6.1"]) await a.host.ns.exec(["ethtool", "-K", dev, "tx", "off"]);
  };
  const pingAll = async (family: 4 | 6) => {
    for (const a of env.all) {
      for (const b of others(a)) {
        const [p, q] = [a.host.pods[0], b.host.pods[0]];
        const to = family === 6 ? q.addr6! : q.addr;
        expect((await pingWhenRouted(p, to)).received, `${p.name} -> ${q.name} IPv${family}`).toBe(2);
      }
    }
  };

  const env = agentLab({
    tag: mode.tag,
    hosts: 3,
    ipv6: true,
    conf: (_, i) => dualConf(mode.start[i]),
    settled: { what: "both families' peers", check: (st) => bothFamilies(st, mode.start, 2) },
    beforePods: () => checksumInSoftware(mode.start),
  });
  const { others } = env;
  /** A node's subnets as it leased them at the start. */
  const subnetsOf = (name: string) => {
    const s = env.settled.get(name)!;
    return { v4: s.subnet!, v6: s.subnet6! };
  };

  it("leases one subnet per family: distinct, inside each network, /24 and /64", () => {
    const v4 = env.all.map((a) => subnetsOf(a.host.name).v4);
    const v6 = env.all.map((a) => subnetsOf(a.host.name).v6);
    expect(new Set(v4).size).toBe(3);
    expect(new Set(v6).size).toBe(3);
    for (const s of v6) expect(parsePrefix6(s).len).toBe(64);
    for (const s of v6) expect(s).toMatch(/^2001:2:0:[89a-f][0-9a-f]{3}::\/64$/);
    for (const s of v4) expect(parsePrefix(s).len).toBe(24);
  });

  it("writes subnet.env as flanneld does in dual-stack, byte for byte (MTU: the underlay's 1500 for host-gw, 1500 - 50 for the VXLAN backends)", async () => {
    const mtu = mode.start.every((t) => t === "host-gw") ? 1500 : 1450;
    for (const a of env.all) {
      const { v4, v6 } = subnetsOf(a.host.name);
      const first4 = v4.replace(/\.0\/24$/, ".1/24");
      const first6 = `${formatIpv6(parsePrefix6(v6).addr + 1n)}/64`;
      expect(await readFile(`${a.dir}/subnet.env`, "utf8")).toBe(
        `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${first4}\nFLANNEL_IPV6_NETWORK=${NETWORK6}\nFLANNEL_IPV6_SUBNET=${first6}\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=false\n`,
      );
    }
  });

  it("pods ping each other over IPv6 and IPv4, every pair", async () => {
    await pingAll(6);
    await pingAll(4);
  });

  it("TCP transfers arrive exactly (byte count and hash), over IPv6 and IPv4, around the ring of nodes", async () => {
    const pairs = mode.start.includes("wasm-vxlan") ? [0, 1, 2] : [0];
    for (const i of pairs) {
      for (const family of [6, 4] as const) {
        if (family === 4 && !mode.start.includes("wasm-vxlan")) continue;
        await expectExactTcp([[env.all[i], env.all[(i + 1) % 3], 7001 + i * 2 + (family === 4 ? 1 : 0)]], family);
      }
    }
  }, 180_000);

  // Only where there are wasm-vxlan nodes (defined, not skipped, per mode).
  if (mode.start.includes("wasm-vxlan"))
    it("wasm-vxlan: IPv6 on weft-v6.1 only (the subnet's address, no link-local), IPv6 off on weft.1; the IPv6 dataplane carries TCP with offloads", async () => {
      for (const [i, a] of env.all.entries()) {
        if (mode.start[i] !== "wasm-vxlan") continue;
        const { v6 } = subnetsOf(a.host.name);
        const addrs = await a.host.ns.ip("-6 -o addr show dev weft-v6.1");
        expect(addrs).toContain(`inet6 ${v6.split("/")[0]}/49 scope global`);
        expect(addrs).not.toContain("fe80:");
        expect(await a.host.ns.ip("-6 -o addr show dev weft.1")).toBe("");
        expect(await a.host.ns.ip("link show dev weft-v6.1")).toContain("mtu 1430");
        const s = await env.agents.status(a);
        expect(s.dataplane6?.offload.enabled).toBe(true);
        expect(Object.keys(s.dataplane6!.peers).sort()).toEqual(
          others(a)
            .map((x) => x.host.name)
            .sort(),
        );
        expect(s.dataplane6!.tx.packets.FORWARD).toBeGreaterThan(0);
        expect(s.dataplane6!.rx.packets.FORWARD).toBeGreaterThan(0);
        // Each wasm-vxlan node sent and received TCP over IPv6 around the ring: TSO6 super-packets
        // from its pod were cut into segments, and segments from its peers merged for its pod.
        expect(s.dataplane6!.tx.offloadSegments, `${a.host.name} TSO6 segments`).toBeGreaterThan(0);
        expect(s.dataplane6!.rx.offloadSegments, `${a.host.name} TCPv6 segments merged`).toBeGreaterThan(0);
        // Nothing of the other family ends up in either dataplane.
        expect(s.dataplane!.tx.packets.IPV6_UNROUTED ?? 0).toBe(0);
      }
    });

  if (mode.start.includes("wasm-vxlan"))
    it("wasm-vxlan: /metrics exports both families' dataplanes under one name per metric, told apart by a family label; IPv6 pings move only the IPv6 dataplane's counters", async () => {
      const i = mode.start.indexOf("wasm-vxlan");
      const [a, b] = [env.all[i], env.all[(i + 1) % 3]];
      const scrape = async () => String(await agentRequest(a.stateDir, "GET", "/metrics"));
      const sample = (text: string, labels: string) => {
        const m = new RegExp(`^weft_dataplane_packets_total\\{${labels}\\} (\\d+)$`, "m").exec(text);
        expect(m, labels).not.toBeNull();
        return Number(m![1]);
      };
      const before = await scrape();
      // One TYPE line per metric (prom-client refuses a second registration), samples of both families.
      expect(before.match(/^# TYPE weft_dataplane_packets_total counter$/gm)).toHaveLength(1);
      for (const family of ["4", "6"]) {
        expect(before).toMatch(
          new RegExp(`^weft_dataplane_offloads\\{backend="wasm-vxlan",family="${family}"\\} 1$`, "m"),
        );
        // The default gives several queue pairs, and this kernel takes the TUN steering program.
        expect(before).toMatch(
          new RegExp(`^weft_dataplane_tun_steering\\{backend="wasm-vxlan",family="${family}"\\} 1$`, "m"),
        );
        expect(before).toMatch(
          new RegExp(`^weft_dataplane_bytes_total\\{family="${family}",direction="rx"\\} [1-9]\\d*$`, "m"),
        );
        expect(before).toMatch(new RegExp(`^weft_dataplane_worker_restarts_total\\{family="${family}"\\} 0$`, "m"));
        expect(before).toMatch(new RegExp(`^weft_dataplane_socket_drops_total\\{family="${family}"\\} 0$`, "m"));
      }
      // The socket drops of each family are read from its own sockets: IPv6 ones on the IPv6 underlay.
      const s = await env.agents.status(a);
      expect(s.socketDrops?.families).toEqual([
        { family: 4, sockets: await udpSockets(a.host, 4, 8472), drops: expect.any(Number) },
        { family: 6, sockets: await udpSockets(a.host, 6, 8472), drops: expect.any(Number) },
      ]);
      expect(s.socketDrops?.sockets).toBeGreaterThanOrEqual(2);
      expect((await ping(a.host.pods[0], b.host.pods[0].addr6!, { count: 3 })).received).toBe(3);
      const after = await scrape();
      for (const dir of ["tx", "rx"]) {
        const at = (text: string, family: string) =>
          sample(text, `family="${family}",direction="${dir}",verdict="FORWARD"`);
        // The requests leave (tx) and the replies come back (rx) through the IPv6 dataplane...
        expect(at(after, "6") - at(before, "6"), `IPv6 ${dir}`).toBeGreaterThanOrEqual(3);
        // ...and not through the IPv4 one, whose counters stand still.
        expect(at(after, "4"), `IPv4 ${dir}`).toBe(at(before, "4"));
      }
    });

  if (mode.start.every((t) => t === "host-gw"))
    it("host-gw: each peer's IPv6 subnet is routed via its IPv6 underlay address, IPv4's via its IPv4 one", async () => {
      for (const a of env.all)
        for (const b of others(a)) {
          const { v4, v6 } = subnetsOf(b.host.name);
          expect((await a.host.ns.ip(`-6 route show ${v6}`)).trim()).toBe(
            `${v6} via ${formatIpv6(b.host.underlayAddr6!)} dev eth0 metric 1024 pref medium`,
          );
          expect(await a.host.ns.ip(`route show ${v4}`)).toContain(`via ${formatIpv4(b.host.underlayAddr)} dev eth0`);
        }
    });

  it("SIGHUP swaps backends: both subnets kept, the new backends' devices and routes, pings over both families (and TCP over IPv6 between kernel and wasm-vxlan)", async () => {
    for (const [i, a] of env.all.entries()) {
      await writeFile(env.agents.netConfPath(a), JSON.stringify(dualConf(mode.swapped[i])));
      a.process!.kill("SIGHUP");
    }
    for (const [i, a] of env.all.entries()) {
      const s = await env.agents.waitFor(a, "swapped, with both families", (st) => bothFamilies(st, mode.swapped, 2));
      expect({ v4: s.subnet, v6: s.subnet6 }).toEqual(subnetsOf(a.host.name));
      const links = await a.host.ns.ip("link show");
      if (mode.swapped[i] !== "vxlan") expect(links).not.toContain("flannel-v6.1");
      if (mode.swapped[i] !== "wasm-vxlan") expect(links).not.toContain("weft-v6.1");
    }
    await checksumInSoftware(mode.swapped);
    const [a1, a2] = env.all;
    // The statuses show the peers' records; the routes follow them by a programming round (the
    // status can show a peer's new backend before the sync it caused has run).
    const v6Route = (want: (r: string) => boolean) =>
      eventually(
        `host1's IPv6 route to host2's subnet on the new backend`,
        async () => (await a1.host.ns.ip(`-6 route show ${subnetsOf(a2.host.name).v6}`)).trim(),
        want,
      );
    // Before the swap host-gw's routes went via the peer's IPv6 underlay address (the start's
    // pings and transfers crossed them); after it, the vxlan device carries them.
    if (mode.start[0] === "host-gw") await v6Route((r) => r.includes("dev flannel-v6.1"));
    if (mode.swapped[0] === "host-gw")
      await v6Route(
        (r) =>
          r ===
          `${subnetsOf(a2.host.name).v6} via ${formatIpv6(a2.host.underlayAddr6!)} dev eth0 metric 1024 pref medium`,
      );
    await pingAll(6);
    await pingAll(4);
    if (mode.swapped.includes("wasm-vxlan")) {
      // The swapped wasm-vxlan node against a swapped kernel node, IPv6 both ways.
      await expectExactTcp(
        [
          [a1, a2, 7011],
          [a2, a1, 7011],
        ],
        6,
        4 << 20,
      );
    }
  });

  it("a killed node's IPv6 routes are removed from its peers once it is declared dead", async () => {
    const [a1, a2, a3] = env.all;
    // a2 programs the kernel (host-gw or vxlan) in both modes; a1 runs wasm-vxlan in the mixed one.
    const gone = subnetsOf(a3.host.name).v6;
    expect((await v6Routes(a2, subnetsOf(a2.host.name).v6)).some((l) => l.startsWith(gone))).toBe(true);
    const wasm = mode.swapped[0] === "wasm-vxlan";
    if (wasm) expect(Object.keys((await env.agents.status(a1)).dataplane6!.peers)).toContain(a3.host.name);
    await env.agents.stop(a3, "SIGKILL");
    for (const a of [a1, a2])
      await env.agents.waitFor(
        a,
        `${a3.host.name} gone from both families' peers`,
        (s) => s.peers.length === 1 && s.peers6?.length === 1,
        60_000,
      );
    for (let t = 0; t < 20 && (await v6Routes(a2, subnetsOf(a2.host.name).v6)).some((l) => l.startsWith(gone)); t++)
      await new Promise((r) => setTimeout(r, 500));
    expect((await v6Routes(a2, subnetsOf(a2.host.name).v6)).some((l) => l.startsWith(gone))).toBe(false);
    if (wasm) {
      // The wasm-vxlan node's IPv6 route table no longer holds it, and pods there still reach the others.
      expect(Object.keys((await env.agents.status(a1)).dataplane6!.peers)).toEqual([a2.host.name]);
      expect((await ping(a1.host.pods[0], a2.host.pods[0].addr6!, { count: 2 })).received).toBe(2);
    }
  });
});
