// Pod-network addresses this node no longer serves. The CNI bridge (cni0) keeps the gateway
// address of the subnet it was first given: flannel's old subnet after a switch from flannel, or
// this node's own after the cluster gave that subnet to another node (AGENT_SUBNET_LOST). The
// bridge plugin then refuses every new pod ("already has an IP address different from ..."), and
// the address's on-link route competes with the route to the subnet's new owner. So before
// subnet.env lets the CNI plugin add pods, such addresses go: any address inside an enabled
// family's pod network but outside this node's subnet of it, on a device that is not weft's own.
// Pods still holding addresses of the old subnet must be restarted either way.
import { contains, parseAddr, type IpPrefix } from "../net/ip.js";
import type { Kernel } from "./iproute.js";

/** weft's own devices (kernel vxlan, udp, the userspace dataplane's TUN devices): their pod-network addresses are weft's to manage. */
export const WEFT_DEVICE = /^(flannel\.\d+|flannel-v6\.\d+|weft\.\d+|weft-v6\.\d+|flannel0)$/;

export interface HeldSubnet {
  /** The whole pod network of one family (Network or IPv6Network). */
  network: IpPrefix;
  /** This node's subnet in it. */
  subnet: IpPrefix;
}

export interface RemovedAddress {
  dev: string;
  /** As `ip addr` shows it: address/prefix length. */
  address: string;
}

/** Removes pod-network addresses outside this node's subnets from devices not weft's own; returns what it removed. */
export async function removeStalePodAddresses(kernel: Kernel, held: readonly HeldSubnet[]): Promise<RemovedAddress[]> {
  const links = await kernel.ipJson<
    Array<{ ifname: string; addr_info?: Array<{ local: string; prefixlen: number; scope: string }> }>
  >(["addr", "show"]);
  const stale: RemovedAddress[] = [];
  for (const l of links) {
    if (WEFT_DEVICE.test(l.ifname)) continue;
    for (const a of l.addr_info ?? []) {
      if (a.scope === "host") continue;
      const addr = parseAddr(a.local);
      const h = held.find((x) => contains(x.network, addr));
      if (h && !contains(h.subnet, addr)) stale.push({ dev: l.ifname, address: `${a.local}/${a.prefixlen}` });
    }
  }
  if (stale.length > 0) await kernel.ipBatch(stale.map((s) => `addr del ${s.address} dev ${s.dev}`));
  return stale;
}
