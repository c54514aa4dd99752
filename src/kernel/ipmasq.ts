// ip-masq (flanneld --ip-masq) with nftables: a table of weft's own, `table ip weft`, holding
// flannel's masquerade rules, always written whole in one `nft -f` transaction (the old table, if
// any, is deleted and the new one added atomically), and deleted on exit. The rules are
// flannel's (pkg/trafficmngr/iptables masqRules), in its order:
//   1. packets kube-proxy marked (0x4000) are left to kube-proxy;
//   2. this host's pods to the pod network: no NAT;
//   3. the pod network to this host's pods: no NAT;
//   4. from outside the pod network to this host's pods: no NAT (keeps client addresses);
//   5. pod network to anywhere else except multicast: masquerade;
//   6. from outside the pod network (this host itself) to pods elsewhere: masquerade.
import { formatPrefix, type Ipv4Prefix } from "../net/ipv4.js";
import type { Kernel } from "./iproute.js";

export const IPMASQ_TABLE = "weft";
export const IPMASQ_CHAIN = "postrouting";
/** kube-proxy's mark for packets it masquerades itself (flannel's KubeProxyMark). */
const KUBE_PROXY_MARK = "0x00004000";
const MULTICAST = "224.0.0.0/4";

export interface IpMasqOptions {
  /** The whole pod network (flannel's Network). */
  network: Ipv4Prefix;
  /** This host's subnet. */
  subnet: Ipv4Prefix;
}

/** The nft script that replaces weft's table with the rules for this network and subnet. */
export function ipMasqScript(o: IpMasqOptions): string {
  const net = formatPrefix(o.network);
  const pods = formatPrefix(o.subnet);
  return [
    // Declaring the table first makes the delete valid whether or not it exists.
    `table ip ${IPMASQ_TABLE}`,
    `delete table ip ${IPMASQ_TABLE}`,
    `table ip ${IPMASQ_TABLE} {`,
    `  chain ${IPMASQ_CHAIN} {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    meta mark & ${KUBE_PROXY_MARK} == ${KUBE_PROXY_MARK} return`,
    `    ip saddr ${pods} ip daddr ${net} return`,
    `    ip saddr ${net} ip daddr ${pods} return`,
    `    ip saddr != ${net} ip daddr ${pods} return`,
    `    ip saddr ${net} ip daddr != ${MULTICAST} masquerade fully-random`,
    `    ip saddr != ${net} ip daddr ${net} masquerade fully-random`,
    `  }`,
    `}`,
    "",
  ].join("\n");
}

/** Installs (or replaces) weft's masquerade rules in one transaction. */
export function setIpMasq(kernel: Kernel, o: IpMasqOptions): Promise<void> {
  return kernel.nft(ipMasqScript(o));
}

/** Deletes weft's table; nothing happens when there is none. */
export function removeIpMasq(kernel: Kernel): Promise<void> {
  return kernel.nft(`table ip ${IPMASQ_TABLE}\ndelete table ip ${IPMASQ_TABLE}\n`);
}
