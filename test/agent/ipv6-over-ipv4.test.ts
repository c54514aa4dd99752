// Real dual-stack wasm-vxlan agents on hosts without an IPv6 underlay address (the lab's
// "pods-only" IPv6: pods and forwarding, no IPv6 on eth0): the IPv6 dataplane weft-v6.1 rides the
// IPv4 underlay on Backend.IPv6OverIPv4Port (Port + 1 by default), peers send IPv6 pod traffic to each other's IPv4 underlay,
// pods ping and TCP is exact over both families. Then one host gains an IPv6 underlay address and
// restarts: it and the others refuse each other's IPv6 (counted and logged as unreachable, no
// route into nothing) while the rest keeps working — kernel flannel-v6 peers, which always use an
// IPv6 underlay, are refused the same way.
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import type { AgentStatus, LabAgent } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { formatIpv6, formatPrefix6, parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, expectExactTcp, NETWORK, udpSockets } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6);
const conf = { Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "wasm-vxlan", Workers: 1 } };

describe.skipIf(!canUseNetns())("agents, dual-stack wasm-vxlan, IPv6 over the IPv4 underlay", () => {
  const bothFamilies = (s: AgentStatus, peers: number) =>
    s.ready && s.peers.length === peers && s.peers6?.length === peers && s.backend6?.type === "wasm-vxlan";
  const env = agentLab({
    tag: "a64",
    hosts: 3,
    ipv6: "pods-only",
    conf: () => conf,
    settled: { what: "both families' peers", check: (st) => bothFamilies(st, 2) },
  });
  const { others } = env;
  /** Pings until one is answered, then 2 more: how many of those came back. */
  const pingOk = async (a: LabAgent, b: LabAgent, family: 4 | 6) =>
    (await pingWhenRouted(a.host.pods[0], family === 6 ? b.host.pods[0].addr6! : b.host.pods[0].addr)).received;

  it("each node leases both families with no IPv6 underlay; IPv6 peers are announced at their IPv4 underlay, the IPv6 dataplane on port 8473", async () => {
    for (const a of env.all) {
      const s = await env.agents.status(a);
      expect(s.underlay).toBe(formatIpv4(a.host.underlayAddr));
      expect(s.underlay6).toBeUndefined();
      expect(s.backend6).toMatchObject({ type: "wasm-vxlan", port: 8473 });
      expect(s.backend).toMatchObject({ type: "wasm-vxlan", port: 8472 });
      expect(Object.fromEntries(s.peers6!.map((p) => [p.name, p.underlay]))).toEqual(
        Object.fromEntries(others(a).map((b) => [b.host.name, formatIpv4(b.host.underlayAddr)])),
      );
      expect(s.backendCounters?.peersUnreachable).toBe(0);
      // Both dataplanes' sockets are IPv4 ones on the underlay address; nothing listens on IPv6.
      const udp = await a.host.ns.exec(["ss", "-H", "-u", "-l", "-n"]);
      const addr = formatIpv4(a.host.underlayAddr);
      expect(udp).toContain(`${addr}:8472`);
      expect(udp).toContain(`${addr}:8473`);
      expect(udp).not.toMatch(/\[[0-9a-f:]*\]:847[23]/);
      // The socket-drop reading finds each dataplane's sockets where they are: the IPv6 one's are IPv4 sockets.
      expect(s.socketDrops?.families).toEqual([
        { family: 4, sockets: await udpSockets(a.host, 4, 8472), drops: expect.any(Number) },
        { family: 6, sockets: await udpSockets(a.host, 4, 8473), drops: expect.any(Number) },
      ]);
      expect(s.socketDrops?.sockets).toBeGreaterThanOrEqual(2);
      // VXLAN over IPv4 costs 50 bytes: the device carries what the pods may send.
      expect(await a.host.ns.ip("link show dev weft-v6.1")).toContain("mtu 1450");
      const first6 = `${formatIpv6(parsePrefix6(s.subnet6!).addr + 1n)}/64`;
      expect(await readFile(env.agents.subnetFile(a), "utf8")).toBe(
        `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${s.subnet!.replace(/\.0\/24$/, ".1/24")}\nFLANNEL_IPV6_NETWORK=${NETWORK6}\nFLANNEL_IPV6_SUBNET=${first6}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
      );
    }
  });

  it("pods ping each other over IPv6 and IPv4, every pair; the IPv6 dataplane carries the IPv6 echoes", async () => {
    for (const a of env.all)
      for (const b of others(a)) {
        expect(await pingOk(a, b, 6), `${a.host.name} -> ${b.host.name} IPv6`).toBe(2);
        expect(await pingOk(a, b, 4), `${a.host.name} -> ${b.host.name} IPv4`).toBe(2);
      }
    for (const a of env.all) {
      const s = await env.agents.status(a);
      expect(s.dataplane6!.tx.packets.FORWARD).toBeGreaterThanOrEqual(4);
      expect(s.dataplane6!.rx.packets.FORWARD).toBeGreaterThanOrEqual(4);
      expect(s.dataplane!.tx.packets.IPV6_UNROUTED ?? 0).toBe(0);
    }
  });

  it("a TCP transfer over IPv6 arrives exactly (byte count and hash), both ways between two nodes", async () => {
    const [a1, a2] = env.all;
    await expectExactTcp(
      [
        [a1, a2, 7101],
        [a2, a1, 7102],
      ],
      6,
    );
  }, 120_000);

  it("IPv6OverIPv4Port (Port + 1) held by another process stops the start; a node that gains an IPv6 underlay address and restarts refuses, and is refused by, the others for IPv6 (logged and counted); IPv4 and the others' IPv6 keep working", async () => {
    const [a1, a2, a3] = env.all;
    await env.agents.stop(a3);
    // Preflight knows the IPv6 dataplane's port (IPv6OverIPv4Port, Port + 1 by default): another process there stops the start.
    const holder = withNetns(a3.host.ns.name, () => UdpSocket.open({ address: a3.host.underlayAddr, port: 8473 }));
    try {
      env.agents.start(a3);
      expect(await env.agents.exited(a3)).toBe(1);
      expect(await env.agents.logTail(a3, 5)).toMatch(
        /\[CONFIG_PORT_IN_USE\] Backend\.IPv6OverIPv4Port \(net-conf\.json; the IPv6 dataplane over the IPv4 underlay\) 8473: UDP 198\.18\.0\.13:8473 is already in use/,
      );
    } finally {
      holder.close();
    }
    await a3.host.ns.ip("addr add 2001:2::13/64 dev eth0 nodad");
    env.agents.start(a3);
    await env.agents.waitReady(a3);
    const s3 = await env.agents.waitFor(
      a3,
      "both families' peers, both IPv6 peers refused",
      (st) => bothFamilies(st, 2) && st.backendCounters?.peersUnreachable === 2 && st.underlay6 === "2001:2::13",
    );
    expect(s3.backend6).toMatchObject({ port: 8472 });
    expect(await env.agents.logTail(a3, 200)).toContain(
      "has no IPv6 underlay address and carries IPv6 over its IPv4 underlay",
    );
    for (const a of [a1, a2]) {
      const s = await env.agents.waitFor(
        a,
        `${a3.host.name} back, its IPv6 refused`,
        (st) =>
          bothFamilies(st, 2) &&
          st.peers6!.find((p) => p.name === a3.host.name)?.underlay === "2001:2::13" &&
          st.backendCounters?.peersUnreachable === 1,
      );
      expect(Object.keys(s.dataplane6!.peers)).not.toContain(a3.host.name);
      expect(await env.agents.logTail(a, 200)).toContain(
        "this node, which has no IPv6 underlay address, over its IPv4 one",
      );
      expect(await pingOk(a, a3, 4)).toBe(2);
    }
    expect(await pingOk(a1, a2, 6)).toBe(2);
    // Refused, not black-holed into a wrong encapsulation: no route for the peer's subnet.
    expect((await ping(a1.host.pods[0], a3.host.pods[0].addr6!, { count: 1, timeoutS: 1 })).received).toBe(0);
  }, 120_000);
});
