// weft's userspace dataplane on lab hosts, set up one way for every dataplane test: host number i
// gets the pod subnet 198.19.i.0/24 and the VTEP MAC 0a:58:c6:13:i:00 (as flannel derives them),
// the wire format's port and MTU, and two workers.
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { UserspaceDataplane, type UserspaceDataplaneOptions } from "../../src/dataplane/dataplane.js";
import type { WireFormat } from "../../src/dataplane/queue-task.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, type LabHost } from "../../src/lab/cluster.js";
import type { Ipv4Prefix } from "../../src/net/ipv4.js";

export const subnetOf = (i: number): Ipv4Prefix => ({ addr: 0xc6130000 + i * 256, len: 24 });
export const macOf = (i: number): Uint8Array => Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, i, 0]);
export const portOf = (format: WireFormat): number => (format === "vxlan" ? 8472 : 8285);
/** The pods' MTU under the format's encapsulation on a 1500-byte underlay. */
export const mtuOf = (format: WireFormat): number => (format === "vxlan" ? 1450 : 1472);

/** The options of `host`'s dataplane as host number `i`. */
export function dataplaneOptions(host: LabHost, i: number, format: WireFormat = "vxlan"): UserspaceDataplaneOptions {
  return {
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
  };
}

/** Those options as test/kernel/fixtures/dataplane-host.mjs takes them in JSON (vtepMac as bytes). */
export function dataplaneHostOptions(host: LabHost, i: number, extra: { workers?: number } = {}) {
  return { ...dataplaneOptions(host, i), vtepMac: [...macOf(i)], ...extra };
}

/** A dataplane in `host`'s namespace as host number `i`, not started (its sockets are bound). */
export function makeDataplane(
  host: LabHost,
  i: number,
  format: WireFormat = "vxlan",
  extra: Partial<UserspaceDataplaneOptions> = {},
): UserspaceDataplane {
  return withNetns(host.ns.name, () => new UserspaceDataplane({ ...dataplaneOptions(host, i, format), ...extra }));
}

/** Starts a dataplane in `host`'s namespace as host number `i`. */
export async function startDataplane(
  host: LabHost,
  i: number,
  format: WireFormat = "vxlan",
  extra: Partial<UserspaceDataplaneOptions> = {},
): Promise<UserspaceDataplane> {
  const dp = makeDataplane(host, i, format, extra);
  await dp.start(host.ns.kernel);
  return dp;
}

/** What a dataplane is told about `host`, host number `i`. */
export function peerOf(host: LabHost, i: number, format: WireFormat = "vxlan") {
  return { name: host.name, subnet: subnetOf(i), underlay: host.underlayAddr, port: portOf(format), vtepMac: macOf(i) };
}

/** A lab of two hosts with `pods` pods each and a dataplane each (hosts 1 and 2), peered both ways. */
export async function dataplanePair(
  tag: string,
  options: { format?: WireFormat; pods?: number; extra?: Partial<UserspaceDataplaneOptions> } = {},
): Promise<{ lab: LabCluster; dps: UserspaceDataplane[] }> {
  const format = options.format ?? "vxlan";
  const lab = await LabCluster.create({ tag, hosts: 2 });
  const dps: UserspaceDataplane[] = [];
  try {
    for (const [k, h] of lab.hosts.entries()) await lab.addPods(h, subnetOf(k + 1), options.pods ?? 1, mtuOf(format));
    for (const [k, h] of lab.hosts.entries()) dps.push(await startDataplane(h, k + 1, format, options.extra));
    dps[0].setPeer(peerOf(lab.hosts[1], 2, format));
    dps[1].setPeer(peerOf(lab.hosts[0], 1, format));
  } catch (err) {
    await Promise.allSettled(dps.map((dp) => dp.stop()));
    await lab.destroy();
    throw err;
  }
  return { lab, dps };
}

/** The kernel's vxlan device on `host` (host number `i`) exactly as flannel programs it, with
 *  `peer` (host number `j`) as its one peer. */
export async function kernelVxlanNode(host: LabHost, i: number, peer: LabHost, j: number): Promise<void> {
  await createVxlanDevice(host.ns.kernel, {
    vni: 1,
    dev: host.underlayIf,
    local: host.underlayAddr,
    port: 8472,
    subnet: subnetOf(i),
    vtepMac: macOf(i),
    mtu: mtuOf("vxlan"),
  });
  await addVxlanPeer(host.ns.kernel, 1, { subnet: subnetOf(j), underlay: peer.underlayAddr, vtepMac: macOf(j) });
  // Between namespaces nothing ever computes an offloaded inner checksum: a kernel peer would
  // accept the packet on trust (the skb says CHECKSUM_PARTIAL), but a socket in userspace only
  // sees the bytes. A real NIC fills the checksum in; here the vxlan device must do it.
  await host.ns.exec(["ethtool", "-K", "flannel.1", "tx", "off"]);
}

/** A lab of two hosts with a pod each: host 1 runs the kernel's vxlan device (kernelVxlanNode),
 *  host 2 weft's dataplane (with `extra` options), peered both ways. */
export async function kernelPeerPair(
  tag: string,
  extra: Partial<UserspaceDataplaneOptions> = {},
): Promise<{ lab: LabCluster; dp: UserspaceDataplane }> {
  const lab = await LabCluster.create({ tag, hosts: 2 });
  const [h1, h2] = lab.hosts;
  try {
    await lab.addPods(h1, subnetOf(1), 1, mtuOf("vxlan"));
    await lab.addPods(h2, subnetOf(2), 1, mtuOf("vxlan"));
    await kernelVxlanNode(h1, 1, h2, 2);
    const dp = await startDataplane(h2, 2, "vxlan", extra);
    dp.setPeer(peerOf(h1, 1));
    return { lab, dp };
  } catch (err) {
    await lab.destroy();
    throw err;
  }
}

/** A dataplane's offload state with the offloads option false, as counters() and weft status show it. */
export const OFFLOADS_OFF = {
  enabled: false,
  tun: [],
  udpGro: false,
  udpGsoRefused: 0,
  reason: "disabled by the offloads option",
};
