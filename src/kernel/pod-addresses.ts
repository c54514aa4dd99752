// Pod-network gateways this node no longer serves. The CNI bridge (cni0) keeps the gateway
// address of the subnet it was first given: flannel's old subnet after a switch from flannel, or
// this node's own after the cluster gave that subnet to another node (AGENT_SUBNET_LOST). The
// bridge plugin then refuses every new pod ("already has an IP address different from ..."), and
// the address's on-link route competes with the route to the subnet's new owner. So before
// subnet.env lets the CNI plugin add pods, such gateways go: an address of a bridge, inside an
// enabled family's pod network, with the subnet length (a pod subnet's gateway, as host-local
// gives it), outside this node's subnet. Nothing else is touched: an address a user put in the
// pod network elsewhere (a loopback /32, a dummy device, another NIC) stays, as the preflight
// check lets it. Pods still holding addresses of the old subnet must be restarted either way.
import { contains, parseAddr, type IpPrefix } from "../net/ip.js";
import type { BatchFailure, Kernel } from "./iproute.js";

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

/**
 * Removes the bridges' pod-subnet gateways outside this node's subnets; returns what it removed
 * and the removals the kernel refused (an address gone meanwhile, say).
 */
export async function removeStalePodGateways(
  kernel: Kernel,
  held: readonly HeldSubnet[],
): Promise<{ removed: RemovedAddress[]; failures: BatchFailure[] }> {
  const bridges = await kernel.ipJson<
    Array<{ ifname: string; addr_info?: Array<{ local: string; prefixlen: number; scope: string }> }>
  >(["addr", "show", "type", "bridge"]);
  const stale: RemovedAddress[] = [];
  for (const b of bridges) {
    for (const a of b.addr_info ?? []) {
      if (a.scope !== "global") continue;
      const addr = parseAddr(a.local);
      const h = held.find((x) => contains(x.network, addr));
      if (h && a.prefixlen === h.subnet.len && !contains(h.subnet, addr))
        stale.push({ dev: b.ifname, address: `${a.local}/${a.prefixlen}` });
    }
  }
  const failures = await kernel.ipBatchForce(stale.map((s) => `addr del ${s.address} dev ${s.dev}`));
  const refused = new Set(failures.map((f) => f.command));
  return { removed: stale.filter((s) => !refused.has(`addr del ${s.address} dev ${s.dev}`)), failures };
}
