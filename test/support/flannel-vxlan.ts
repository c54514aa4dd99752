// A host that runs the Linux kernel's vxlan device exactly as flannel programs it: flannel.<VNI>
// (nolearning, dstport 8472), the subnet's network address as a /32, and per peer a permanent
// neighbour entry, a permanent FDB entry and an onlink route (shared/seeds show real output).
import { formatIpv4, formatMac, type Ipv4Prefix } from "../../src/net/ipv4.js";
import type { Netns } from "./netns.js";

export interface FlannelVxlanPeer {
  subnet: Ipv4Prefix;
  underlay: number;
  vtepMac: Uint8Array;
}

export async function flannelVxlanHost(ns: Netns, o: { vni: number; dev: string; local: number; subnet: Ipv4Prefix; vtepMac: Uint8Array; mtu?: number }): Promise<void> {
  const name = `flannel.${o.vni}`;
  await ns.kernel.ipBatch([
    `link add ${name} address ${formatMac(o.vtepMac)} mtu ${o.mtu ?? 1450} type vxlan id ${o.vni} local ${formatIpv4(o.local)} dev ${o.dev} dstport 8472 nolearning`,
    `addr add ${formatIpv4(o.subnet.addr)}/32 dev ${name}`,
    `link set ${name} up`,
  ]);
}

export async function flannelVxlanPeer(ns: Netns, vni: number, p: FlannelVxlanPeer): Promise<void> {
  const name = `flannel.${vni}`;
  const gw = formatIpv4(p.subnet.addr);
  await ns.kernel.ipBatch([`neigh replace ${gw} lladdr ${formatMac(p.vtepMac)} dev ${name} nud permanent`]);
  await ns.kernel.bridgeBatch([`fdb append ${formatMac(p.vtepMac)} dev ${name} dst ${formatIpv4(p.underlay)} self permanent`]);
  await ns.kernel.ipBatch([`route replace ${gw}/${p.subnet.len} via ${gw} dev ${name} onlink`]);
}
