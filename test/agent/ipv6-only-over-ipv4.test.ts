// Real IPv6-only wasm-vxlan agents (EnableIPv4 false) whose IPv6 rides the IPv4 underlay: hosts
// of the lab's "pods-only" IPv6 (pods and forwarding, no IPv6 address on eth0) fall back to their
// IPv4 address, and a host that has an IPv6 underlay address but is given --public-ip rides IPv4
// too. They gossip over IPv4, lease only IPv6 subnets, run weft-v6.1 alone with IPv4 sockets on
// Backend.IPv6OverIPv4Port (Port + 1 by default; one host sets its own, announced like any port),
// write subnet.env as flanneld does in IPv6-only mode, and their pods (IPv6 only) ping every pair
// and move TCP exactly. Kernel vxlan, which needs an IPv6 underlay, refuses to start on such a
// host with one error that says what to do.
import { readFile, writeFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import type { LabAgent } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { formatIpv6, formatPrefix6, parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, expectExactTcp } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6);
const conf = (backend: object) => ({ EnableIPv4: false, EnableIPv6: true, IPv6Network: NETWORK6, Backend: backend });
/** host2 picks its own port for IPv6 over IPv4; the others take the default, Port + 1. */
const OWN_PORT = 8600;
const portOf = (a: LabAgent) => (a.host.name === "host2" ? OWN_PORT : 8473);

describe.skipIf(!canUseNetns())("agents, IPv6-only wasm-vxlan over the IPv4 underlay", () => {
  const env = agentLab({
    tag: "a6v4",
    hosts: 3,
    ipv6: "pods-only",
    beforeStart: (lab) => lab.hosts[2].ns.ip("addr add 2001:2::13/64 dev eth0 nodad"),
    conf: (h) => conf({ Type: "wasm-vxlan", Workers: 1, ...(h.name === "host2" && { IPv6OverIPv4Port: OWN_PORT }) }),
    // host3 has an IPv6 underlay address and is told to use its IPv4 one.
    flags: (a) => (a.host.name === "host3" ? ["--public-ip", formatIpv4(a.host.underlayAddr)] : []),
    settled: {
      what: "IPv6 peers",
      check: (st) => st.ready && st.peers.length === 0 && st.peers6?.length === 2 && st.backend?.type === "wasm-vxlan",
    },
  });
  const { others } = env;

  it("each node leases only IPv6, gossips and tunnels over its IPv4 underlay on IPv6OverIPv4Port, and writes flanneld's IPv6-only subnet.env", async () => {
    for (const a of env.all) {
      const s = await env.agents.status(a);
      const addr = formatIpv4(a.host.underlayAddr);
      expect(s.underlay).toBe(addr);
      expect(s.underlay6).toBeUndefined();
      expect(s.subnet).toBeUndefined();
      expect(s.backend).toMatchObject({ type: "wasm-vxlan", port: portOf(a) });
      expect(s.settings.backend).toMatchObject({ Type: "wasm-vxlan", Port: 8472, IPv6OverIPv4Port: portOf(a) });
      expect(Object.fromEntries(s.peers6!.map((p) => [p.name, p.underlay]))).toEqual(
        Object.fromEntries(others(a).map((b) => [b.host.name, formatIpv4(b.host.underlayAddr)])),
      );
      expect(s.members.find((m) => m.name === a.host.name)?.addr).toBe(`${addr}:7946`);
      expect(s.backendCounters?.peersUnreachable).toBe(0);
      // One dataplane, IPv6's, on an IPv4 socket; nothing holds Port or listens on IPv6.
      const udp = await a.host.ns.exec(["ss", "-H", "-u", "-l", "-n"]);
      expect(udp).toContain(`${addr}:${portOf(a)}`);
      expect(udp).not.toContain(":8472");
      expect(udp).not.toMatch(/\[[0-9a-f:]*\]:(8473|8600)/);
      const links = await a.host.ns.ip("-br link show");
      expect(links).toContain("weft-v6.1");
      expect(links).not.toMatch(/\bweft\.1\b/);
      expect(await a.host.ns.ip("link show dev weft-v6.1")).toContain("mtu 1450");
      const first6 = `${formatIpv6(parsePrefix6(s.subnet6!).addr + 1n)}/64`;
      expect(await readFile(env.agents.subnetFile(a), "utf8")).toBe(
        `FLANNEL_IPV6_NETWORK=${NETWORK6}\nFLANNEL_IPV6_SUBNET=${first6}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
      );
    }
  });

  it("pods (IPv6 only) ping every pair; a TCP transfer arrives exactly both ways", async () => {
    for (const a of env.all) {
      expect(a.host.pods[0].addr6).toBeDefined();
      for (const b of others(a)) {
        expect(
          (await pingWhenRouted(a.host.pods[0], b.host.pods[0].addr6!)).received,
          `${a.host.name} -> ${b.host.name}`,
        ).toBe(2);
      }
    }
    const [a1, a2, a3] = env.all;
    await expectExactTcp(
      [
        [a1, a2, 7111],
        [a2, a3, 7112],
      ],
      6,
    );
    for (const a of env.all) {
      const s = await env.agents.status(a);
      expect(s.dataplane!.tx.packets.FORWARD).toBeGreaterThanOrEqual(4);
      expect(s.dataplane!.rx.packets.FORWARD).toBeGreaterThanOrEqual(4);
      // The IPv6 dataplane forwards without the IPv4 table (64 MiB) in its memory.
      expect(s.dataplane!.memoryBytes).toBeLessThan(32 << 20);
    }
  }, 120_000);

  it("kernel vxlan, which needs an IPv6 underlay, refuses a host without one, saying what to do", async () => {
    const a1 = env.all[0];
    await env.agents.stop(a1);
    await writeFile(env.agents.netConfPath(a1), JSON.stringify(conf({ Type: "vxlan" })));
    env.agents.start(a1);
    expect(await env.agents.exited(a1)).toBe(1);
    expect(await env.agents.logTail(a1, 5)).toMatch(
      /\[AGENT_UNDERLAY_NOT_FOUND\] no interface with a global IPv6 address matches --iface eth0.*use Backend\.Type wasm-vxlan, which carries IPv6 over an IPv4 underlay too/,
    );
  }, 60_000);
});
