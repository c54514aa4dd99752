// Wire compatibility with the Linux kernel: host1 runs the kernel's vxlan device exactly as
// flannel programs it, host2 runs weft's userspace dataplane in the VXLAN format. Pods must reach
// each other both ways, with ping and with an exact TCP transfer.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;
const S1 = { addr: 0xc6130100, len: 24 };
const S2 = { addr: 0xc6130200, len: 24 };
const MAC1 = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x01, 0x00]);
const MAC2 = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x02, 0x00]);

describe.skipIf(!canUseNetns())("wasm-vxlan against a kernel vxlan peer", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "interop", hosts: 2 });
    const [h1, h2] = lab.hosts;
    await lab.addPods(h1, S1, 1, 1450);
    await lab.addPods(h2, S2, 1, 1450);
    await createVxlanDevice(h1.ns.kernel, {
      vni: 1,
      dev: h1.underlayIf,
      local: h1.underlayAddr,
      port: 8472,
      subnet: S1,
      vtepMac: MAC1,
      mtu: 1450,
    });
    await addVxlanPeer(h1.ns.kernel, 1, { subnet: S2, underlay: h2.underlayAddr, vtepMac: MAC2 });
    // Between namespaces nothing ever computes an offloaded inner checksum: a kernel peer would
    // accept the packet on trust (the skb says CHECKSUM_PARTIAL), but a socket in userspace only
    // sees the bytes. A real NIC fills the checksum in; here the vxlan device must do it.
    await h1.ns.exec(["ethtool", "-K", "flannel.1", "tx", "off"]);
    dp = withNetns(
      h2.ns.name,
      () =>
        new UserspaceDataplane({
          format: "vxlan",
          tunName: "weft0",
          mtu: 1450,
          network: LAB_POD_NETWORK,
          subnet: S2,
          listenAddr: h2.underlayAddr,
          port: 8472,
          vni: 1,
          vtepMac: MAC2,
          workers: 2,
        }),
    );
    await dp.start(h2.ns.kernel);
    dp.setPeer({ name: h1.name, subnet: S1, underlay: h1.underlayAddr, port: 8472, vtepMac: MAC1 });
  });

  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("pings both ways", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    expect((await ping(p1, p2.addr)).received).toBe(3);
    expect((await ping(p2, p1.addr)).received).toBe(3);
  });

  it("carries TCP exactly from the kernel peer to weft and back", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const there = await tcpTransfer(p1, p2, 50 * MB);
    expect(there.received).toEqual(there.sent);
    const back = await tcpTransfer(p2, p1, 50 * MB);
    expect(back.received).toEqual(back.sent);
    const c = dp.counters();
    expect(c.rx.packets.SPOOFED + c.rx.packets.UNKNOWN_SOURCE).toBe(0n);
    expect(c.peers[lab.hosts[0].name].rxBytes).toBeGreaterThan(50n * BigInt(MB));
  });
});
