// Super-packets of the shapes socket options give them, end to end through wasm-vxlan
// (dual-stack, two hosts, offloads on): TCP over IPv6 with a hop-by-hop or destination options
// header in every segment (IPV6_HOPOPTS, IPV6_DSTOPTS: TSO6 hands the dataplane super-packets
// whose TCP header sits behind it; a 600-byte one shrinks the MSS until a 64 KB super-packet has
// more segments than a segment slot holds), and TCP to a peer that advertises the smallest MSS
// Linux takes (TCP_MAXSEG 88: likewise). The TUN device's gso_max_segs makes the kernel cut such a
// super-packet first. Each transfer must arrive exactly;
// before, each stalled, its super-packets dropped as OFFLOAD_HEADER or OFFLOAD_SIZE.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSubnetEnv } from "../../src/agent/subnet-env.js";
import type { Backend, BackendAnnouncement } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { SEGMENT_SLOT_BYTES } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../../src/lab/cluster.js";
import { familyCtx, subnet6Of, subnetOf } from "../backends/support.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

interface Node {
  host: LabHost;
  dir: string;
  backends: Record<4 | 6, Backend>;
  announced: Record<4 | 6, BackendAnnouncement>;
}

describe.skipIf(!canUseNetns())("offloads: super-packets shaped by socket options (wasm-vxlan, dual-stack)", () => {
  let lab: LabCluster;
  const nodes: Node[] = [];

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "offsh", hosts: 2, ipv6: true });
    for (const [k, host] of lab.hosts.entries()) {
      const i = k + 1;
      const dir = mkdtempSync(join(tmpdir(), "weft-offload-shapes-"));
      const node: Partial<Node> = { host, dir, backends: {} as Node["backends"], announced: {} as Node["announced"] };
      nodes.push(node as Node);
      for (const family of [4, 6] as const) {
        // The dataplane opens its TUN device and sockets in the calling thread's namespace.
        const b = withNetns(host.ns.name, () =>
          createBackend("wasm-vxlan", { workers: 2 }, familyCtx(host, dir, family, i)),
        );
        node.backends![family] = b;
        node.announced![family] = await b.start();
      }
      // Pods of the MTU the agent gives them (FLANNEL_MTU, the smallest of the families'): 20
      // bytes over the IPv6 TUN device's, whose encapsulation takes 20 more than IPv4's. TCP over
      // IPv6 finds the device's by path MTU discovery, unless the forwarding kernel misreads its
      // headers and lets full segments through (large destination options).
      const file = join(lab.hostDir(host), "subnet.env");
      await writeSubnetEnv(file, {
        v4: { network: LAB_POD_NETWORK, subnet: subnetOf(i) },
        v6: { network: LAB_POD_NETWORK6, subnet: subnet6Of(i) },
        mtu: Math.min(node.backends![4].mtu, node.backends![6].mtu),
        ipMasq: false,
      });
      await lab.addPodsFromSubnetFile(host, file, 1);
    }
    for (const [k, n] of nodes.entries()) {
      const other = nodes[1 - k];
      const j = 2 - k;
      await n.backends[4].setPeer({
        name: other.host.name,
        subnet: subnetOf(j),
        underlay: other.host.underlayAddr,
        backend: other.announced[4],
      });
      await n.backends[6].setPeer({
        name: other.host.name,
        subnet: subnet6Of(j),
        underlay: other.host.underlayAddr6!,
        backend: other.announced[6],
      });
    }
  });

  afterAll(async () => {
    for (const n of nodes) for (const b of Object.values(n.backends)) await b.stop(false).catch(() => undefined);
    await lab?.destroy();
    for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
  });

  const offloadDrops = (family: 4 | 6) =>
    nodes.map((n) => {
      const c = n.backends[family].dataplaneCounters!();
      return c.tx.packets.OFFLOAD_HEADER + c.tx.packets.OFFLOAD_SIZE;
    });

  // The 8-byte destination options from host1's own namespace, not from its pod: a forwarding
  // kernel parses no destination options, so it reads TCP's header length where the header sits
  // (ip6_rcv_core puts the transport header right behind the fixed header, only hop-by-hop moves
  // it), there TCP's sequence number, and sizes segments wrong. A pod's TSO6 super-packets met
  // Packet Too Big errors at random (one transfer in three stalled, nothing dropped by weft). The
  // 600-byte header from a pod reads as 0 there (its options' zeros): sized short, forwarded at
  // the pods' MTU of 1450, 20 bytes over the TUN device's. That leaves a 778-byte MSS: a 64 KB
  // super-packet has 84 segments, more than the 96 KiB segment slot holds (66 of 22 + 1450 bytes),
  // which the TUN device's gso_max_segs must keep out, where before every such super-packet was
  // dropped as OFFLOAD_SIZE (and one of 67 was while gso_max_segs counted the device's MTU).
  for (const [extHeader, extHeaderBytes, port, source] of [
    ["hop", 8, 7301, "a pod"],
    ["dst", 8, 7302, "the node"],
    ["dst", 600, 7304, "a pod"],
  ] as const)
    it(`carries TCP over IPv6 whose every segment carries a ${extHeaderBytes}-byte ${extHeader === "hop" ? "hop-by-hop" : "destination"} options header from ${source}, cutting its TSO6 super-packets`, async () => {
      const [pod1, to] = nodes.map((n) => n.host.pods[0]);
      const from = source === "a pod" ? pod1 : { ...pod1, name: nodes[0].host.name, ns: nodes[0].host.ns };
      const before = nodes[0].backends[6].dataplaneCounters!().tx;
      const { sent, received } = await tcpTransfer(from, to, 20 << 20, port, 6, {
        extHeader,
        extHeaderBytes,
        timeoutMs: 30_000,
      });
      expect(received).toEqual(sent);
      const after = nodes[0].backends[6].dataplaneCounters!().tx;
      // Super-packets were cut (more datagrams than packets read), none refused.
      expect(after.offloadSegments - before.offloadSegments).toBeGreaterThan(
        after.packets.FORWARD - before.packets.FORWARD,
      );
      expect(offloadDrops(6)).toEqual([0n, 0n]);
      // As many segments of the pods' MTU, behind VXLAN's 22 bytes in front, as a slot holds.
      const [tun6] = await nodes[0].host.ns.kernel.ipJson<Array<{ gso_max_segs: number }>>([
        "-details",
        "link",
        "show",
        "weft-v6.1",
      ]);
      expect(tun6.gso_max_segs).toBe(Math.floor(SEGMENT_SLOT_BYTES / (22 + nodes[0].backends[6].mtu)));
    });

  it("carries TCP to a pod that advertises an MSS of 88 (TCP_MAXSEG), the TUN device letting through no super-packet of more segments than a slot holds", async () => {
    const [from, to] = nodes.map((n) => n.host.pods[0]);
    const { sent, received } = await tcpTransfer(from, to, 8 << 20, 7303, 4, { maxSeg: 88, timeoutMs: 30_000 });
    expect(received).toEqual(sent);
    expect(offloadDrops(4)).toEqual([0n, 0n]);
    const [tun] = await nodes[0].host.ns.kernel.ipJson<Array<{ gso_max_segs: number; mtu: number }>>([
      "-details",
      "link",
      "show",
      "weft.1",
    ]);
    // As many segments of the MTU, behind VXLAN's 22 bytes in front, as a segment slot holds.
    expect(tun.gso_max_segs).toBe(Math.floor(SEGMENT_SLOT_BYTES / (22 + tun.mtu)));
  });
});
