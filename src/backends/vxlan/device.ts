// The kernel's vxlan device as flannel programs it (shared/seeds show real output): flannel.<VNI>
// (flannel-v6.<VNI> for IPv6, a device of its own with its own MAC, sending over the IPv6
// underlay) with nolearning (learning with the Learning key) and dstport 8472, the subnet's
// network address as a /32 (/128), and per peer — in this order — a permanent neighbour entry
// (peer's tunnel address -> its VTEP MAC), a permanent FDB entry (VTEP MAC -> underlay address)
// and an onlink route to the peer's subnet; removal in the reverse order. Kernel state changes go
// through Kernel (iproute2).
import type { Kernel } from "../../kernel/iproute.js";
import type { PeerEntries } from "../../kernel/converge.js";
import { FDB, NEIGH, ROUTE, routeMetric } from "../../kernel/entries.js";
import type { LinkState } from "../../kernel/links.js";
import { formatMac } from "../../net/ipv4.js";
import { familyOf, formatAddr as formatIpv4, type IpAddr, type IpPrefix } from "../../net/ip.js";

export interface VxlanDeviceSpec {
  vni: number;
  /** Underlay interface and address the device sends from. */
  dev: string;
  local: IpAddr;
  port: number;
  subnet: IpPrefix;
  vtepMac: Uint8Array;
  mtu: number;
  gbp?: boolean;
  learning?: boolean;
}

export interface VxlanPeerEntry {
  subnet: IpPrefix;
  underlay: IpAddr;
  vtepMac: Uint8Array;
  /** The peer's VXLAN port when it differs from this device's dstport (then the FDB entry carries it). */
  port?: number;
}

export const vxlanDeviceName = (vni: number, family: 4 | 6 = 4) =>
  family === 4 ? `flannel.${vni}` : `flannel-v6.${vni}`;

export async function createVxlanDevice(kernel: Kernel, o: VxlanDeviceSpec): Promise<void> {
  const family = familyOf(o.subnet.addr);
  const name = vxlanDeviceName(o.vni, family);
  await kernel.ipBatch([
    `link add ${name} address ${formatMac(o.vtepMac)} mtu ${o.mtu} type vxlan id ${o.vni} local ${formatIpv4(o.local)} dev ${o.dev} dstport ${o.port} ${o.learning ? "learning" : "nolearning"}${o.gbp ? " gbp" : ""}`,
    // No duplicate address detection: the address is this node's alone, and a tentative address cannot be routed from.
    `addr add ${formatIpv4(o.subnet.addr)}/${family === 4 ? 32 : "128 nodad"} dev ${name}`,
    `link set ${name} up`,
  ]);
}

/**
 * How an existing device differs from the spec, or undefined when it can be kept. The MTU is no
 * reason to replace it: it is set in place (a replaced device got the same clamped MTU again).
 */
export function vxlanDeviceMismatch(link: LinkState, o: VxlanDeviceSpec): string | undefined {
  const v = link.vxlan;
  if (!v) return `it is a ${link.kind ?? "plain"} device, not vxlan`;
  const want: Array<[string, unknown, unknown]> = [
    ["VNI", v.vni, o.vni],
    ["local address", v.local === undefined ? "none" : formatIpv4(v.local), formatIpv4(o.local)],
    ["underlay device", v.link ?? "none", o.dev],
    ["dstport", v.port, o.port],
    ["learning", v.learning, o.learning ?? false],
    ["GBP", v.gbp, o.gbp ?? false],
    ["MAC", link.mac, formatMac(o.vtepMac)],
  ];
  const diffs = want
    .filter(([, have, wanted]) => have !== wanted)
    .map(([what, have, wanted]) => `${what} is ${String(have)}, not ${String(wanted)}`);
  return diffs.length > 0 ? diffs.join(", ") : undefined;
}

/** A peer's neighbour, FDB and route entries on flannel.<vni>, exactly as flannel writes them. */
export function vxlanPeerEntries(vni: number, p: VxlanPeerEntry): PeerEntries {
  const family = familyOf(p.subnet.addr);
  const dev = vxlanDeviceName(vni, family);
  const mac = formatMac(p.vtepMac);
  return {
    neigh: { addr: p.subnet.addr, mac, dev, permanent: true },
    fdb: { mac, dev, dst: p.underlay, port: p.port, permanent: true },
    route: { dst: p.subnet, gateway: p.subnet.addr, dev, onlink: true, metric: routeMetric(family) },
  };
}

/** Adds one peer by hand (the backend batches many through converge.ts instead). */
export async function addVxlanPeer(kernel: Kernel, vni: number, p: VxlanPeerEntry): Promise<void> {
  const e = vxlanPeerEntries(vni, p);
  await kernel.ipBatch([NEIGH.replace(e.neigh!)]);
  await kernel.bridgeBatch([FDB.replace(e.fdb!)]);
  await kernel.ipBatch([ROUTE.replace(e.route)]);
}
