// The kernel's vxlan device as flannel programs it (shared/seeds show real output): flannel.<VNI>
// with nolearning and dstport 8472, the subnet's network address as a /32, and per peer — in this
// order — a permanent neighbour entry (peer's tunnel address -> its VTEP MAC), a permanent FDB
// entry (VTEP MAC -> underlay address) and an onlink route to the peer's subnet; removal in the
// reverse order. Kernel state changes go through Kernel (iproute2).
import type { Kernel } from "../../kernel/iproute.js";
import { formatIpv4, formatMac, type Ipv4Prefix } from "../../net/ipv4.js";

export interface VxlanDeviceSpec {
  vni: number;
  /** Underlay interface and address the device sends from. */
  dev: string;
  local: number;
  port: number;
  subnet: Ipv4Prefix;
  vtepMac: Uint8Array;
  mtu: number;
}

export interface VxlanPeerEntry {
  subnet: Ipv4Prefix;
  underlay: number;
  vtepMac: Uint8Array;
}

export const vxlanDeviceName = (vni: number) => `flannel.${vni}`;

export async function createVxlanDevice(kernel: Kernel, o: VxlanDeviceSpec): Promise<void> {
  const name = vxlanDeviceName(o.vni);
  await kernel.ipBatch([
    `link add ${name} address ${formatMac(o.vtepMac)} mtu ${o.mtu} type vxlan id ${o.vni} local ${formatIpv4(o.local)} dev ${o.dev} dstport ${o.port} nolearning`,
    `addr add ${formatIpv4(o.subnet.addr)}/32 dev ${name}`,
    `link set ${name} up`,
  ]);
}

export async function addVxlanPeer(kernel: Kernel, vni: number, p: VxlanPeerEntry): Promise<void> {
  const name = vxlanDeviceName(vni);
  const gw = formatIpv4(p.subnet.addr);
  await kernel.ipBatch([`neigh replace ${gw} lladdr ${formatMac(p.vtepMac)} dev ${name} nud permanent`]);
  await kernel.bridgeBatch([`fdb replace ${formatMac(p.vtepMac)} dev ${name} dst ${formatIpv4(p.underlay)} self permanent`]);
  await kernel.ipBatch([`route replace ${gw}/${p.subnet.len} via ${gw} dev ${name} onlink`]);
}
