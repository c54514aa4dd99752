// /run/flannel/subnet.env, written exactly as flanneld writes it, so that the flannel CNI plugin
// works unchanged: the network, the first usable address of this node's subnet with its prefix
// length, the MTU pods must use, and whether ip-masq is on; replaced atomically.
import { writeFileAtomic } from "../fs/atomic-write.js";
import { WeftError } from "../errors.js";
import { formatIpv4, formatPrefix, parseIpv4, parsePrefix, prefixMask, type Ipv4Prefix } from "../net/ipv4.js";

export const DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env";

export function subnetEnv(network: Ipv4Prefix, subnet: Ipv4Prefix, mtu: number, ipMasq: boolean): string {
  return [
    `FLANNEL_NETWORK=${formatPrefix(network)}`,
    `FLANNEL_SUBNET=${formatIpv4(subnet.addr + 1)}/${subnet.len}`,
    `FLANNEL_MTU=${mtu}`,
    `FLANNEL_IPMASQ=${ipMasq}`,
    "",
  ].join("\n");
}

export function writeSubnetEnv(path: string, network: Ipv4Prefix, subnet: Ipv4Prefix, mtu: number, ipMasq: boolean): Promise<void> {
  return writeFileAtomic(path, subnetEnv(network, subnet, mtu, ipMasq));
}

/** Reads a subnet.env back (as the flannel CNI plugin does). */
export function parseSubnetEnv(text: string): { network: Ipv4Prefix; subnet: Ipv4Prefix; mtu: number; ipMasq: boolean } {
  const vars = new Map(text.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  const need = (k: string) => {
    const v = vars.get(k);
    if (v === undefined) throw new WeftError("AGENT_SUBNET_ENV_INVALID", `subnet.env has no ${k}`);
    return v;
  };
  const [addr, len] = need("FLANNEL_SUBNET").split("/");
  const l = Number(len);
  return {
    network: parsePrefix(need("FLANNEL_NETWORK")),
    subnet: { addr: (parseIpv4(addr) & prefixMask(l)) >>> 0, len: l },
    mtu: Number(need("FLANNEL_MTU")),
    ipMasq: need("FLANNEL_IPMASQ") === "true",
  };
}
