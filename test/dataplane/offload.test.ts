// Segmentation offloads end to end: TUN devices with TSO and vnet headers, UDP GSO/GRO sockets,
// segmenting and coalescing in Wasm. Between two weft nodes (both wire formats) and against a
// kernel vxlan peer, exact TCP transfers must arrive whole, and the counters must show that
// super-packets really were segmented and coalesced. With offloads off, the dataplane says why.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { UserspaceDataplane, type UserspaceDataplaneOptions } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, type LabHost } from "../../src/lab/cluster.js";
import { iperf } from "../../src/lab/traffic.js";
import type { Ipv4Prefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;
const subnetOf = (i: number): Ipv4Prefix => ({ addr: 0xc6130000 + i * 256, len: 24 });
const macOf = (i: number) => Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, i, 0]);
const portOf = (format: "vxlan" | "udp") => (format === "vxlan" ? 8472 : 8285);
const mtuOf = (format: "vxlan" | "udp") => (format === "vxlan" ? 1450 : 1472);

async function startNode(
  host: LabHost,
  i: number,
  format: "vxlan" | "udp",
  extra: Partial<UserspaceDataplaneOptions> = {},
): Promise<UserspaceDataplane> {
  const dp = withNetns(
    host.ns.name,
    () =>
      new UserspaceDataplane({
        format,
        tunName: "weft0",
        mtu: mtuOf(format),
        network: LAB_POD_NETWORK,
        subnet: subnetOf(i),
        listenAddr: host.underlayAddr,
        port: portOf(format),
        vni: 1,
        vtepMac: macOf(i),
        workers: 2,
        offloads: true,
        ...extra,
      }),
  );
  await dp.start(host.ns.kernel);
  return dp;
}

function noOffloadDrops(dp: UserspaceDataplane): void {
  const c = dp.counters();
  for (const dir of [c.tx, c.rx]) expect(dir.packets.OFFLOAD_HEADER + dir.packets.OFFLOAD_SIZE).toBe(0n);
}

for (const format of ["vxlan", "udp"] as const) {
  describe.skipIf(!canUseNetns())(`offloads between weft nodes, ${format} format`, () => {
    let lab: LabCluster;
    const dps: UserspaceDataplane[] = [];

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: `off${format[0]}`, hosts: 2 });
      for (const [k, h] of lab.hosts.entries()) await lab.addPods(h, subnetOf(k + 1), 1, mtuOf(format));
      for (const [k, h] of lab.hosts.entries()) dps.push(await startNode(h, k + 1, format));
      for (const [k, dp] of dps.entries()) {
        const peer = lab.hosts[1 - k];
        dp.setPeer({
          name: peer.name,
          subnet: subnetOf(2 - k),
          underlay: peer.underlayAddr,
          port: portOf(format),
          vtepMac: macOf(2 - k),
        });
      }
    });

    afterAll(async () => {
      for (const dp of dps) await dp.stop();
      await lab?.destroy();
    });

    it("carries TCP exactly both ways, segmenting and coalescing super-packets", async () => {
      const [p1] = lab.hosts[0].pods;
      const [p2] = lab.hosts[1].pods;
      for (const dp of dps) expect(dp.counters().offload).toMatchObject({ enabled: true, udpGro: true });
      const there = await tcpTransfer(p1, p2, 50 * MB);
      expect(there.received).toEqual(there.sent);
      const back = await tcpTransfer(p2, p1, 50 * MB);
      expect(back.received).toEqual(back.sent);
      const [c1, c2] = dps.map((dp) => dp.counters());
      // Both ways: the sender cut super-packets into datagrams, the receiver merged segments again.
      expect(c1.tx.offloadSegments).toBeGreaterThan(c1.tx.packets.FORWARD);
      expect(c2.rx.offloadSegments).toBeGreaterThan(0n);
      expect(c2.tx.offloadSegments).toBeGreaterThan(c2.tx.packets.FORWARD);
      expect(c1.rx.offloadSegments).toBeGreaterThan(0n);
      for (const dp of dps) noOffloadDrops(dp);
    });
  });
}

describe.skipIf(!canUseNetns())("offloads against a kernel vxlan peer", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "offkvx", hosts: 2 });
    const [h1, h2] = lab.hosts;
    await lab.addPods(h1, subnetOf(1), 1, 1450);
    await lab.addPods(h2, subnetOf(2), 1, 1450);
    await createVxlanDevice(h1.ns.kernel, {
      vni: 1,
      dev: h1.underlayIf,
      local: h1.underlayAddr,
      port: 8472,
      subnet: subnetOf(1),
      vtepMac: macOf(1),
      mtu: 1450,
    });
    await addVxlanPeer(h1.ns.kernel, 1, { subnet: subnetOf(2), underlay: h2.underlayAddr, vtepMac: macOf(2) });
    // As in interop.test.ts: between namespaces nobody finishes the kernel's offloaded inner checksums.
    await h1.ns.exec(["ethtool", "-K", "flannel.1", "tx", "off"]);
    dp = await startNode(h2, 2, "vxlan");
    dp.setPeer({ name: h1.name, subnet: subnetOf(1), underlay: h1.underlayAddr, port: 8472, vtepMac: macOf(1) });
  });

  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("sends the kernel standard datagrams it accepts, and takes its single datagrams", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    expect(dp.counters().offload.enabled).toBe(true);
    const toKernel = await tcpTransfer(p2, p1, 50 * MB);
    expect(toKernel.received).toEqual(toKernel.sent);
    const fromKernel = await tcpTransfer(p1, p2, 50 * MB);
    expect(fromKernel.received).toEqual(fromKernel.sent);
    const r = await iperf(p1, p2, { seconds: 2 });
    expect(r.receivedBytes).toBeGreaterThan(0);
    const c = dp.counters();
    expect(c.tx.offloadSegments).toBeGreaterThan(c.tx.packets.FORWARD);
    // The kernel's datagrams carry no UDP checksum, so UDP GRO never merges them; weft still
    // coalesces consecutive segments of a flow before the TUN write.
    expect(c.rx.offloadSegments).toBeGreaterThan(0n);
    noOffloadDrops(dp);
  });
});

describe.skipIf(!canUseNetns())("offloads turned off", () => {
  it("reports why and runs the plain path", async () => {
    const lab = await LabCluster.create({ tag: "offoff", hosts: 1 });
    try {
      const dp = await startNode(lab.hosts[0], 1, "vxlan", { offloads: false, workers: 1 });
      const o = dp.counters().offload;
      await dp.stop();
      expect(o).toEqual({ enabled: false, tun: [], udpGro: false, reason: "disabled by the offloads option" });
    } finally {
      await lab.destroy();
    }
  });
});
