// ip-masq (flanneld --ip-masq) with nftables: a table of weft's own per family, `table ip weft`
// and (dual-stack) `table ip6 weft`, holding flannel's masquerade rules, always written whole in
// one `nft -f` transaction (the old tables, if any, are deleted and the new ones added
// atomically), and deleted on exit. The rules are flannel's (pkg/trafficmngr masq rules; the IPv6
// ones are the same with ip6 matches and ff00::/8 as multicast), in its order:
//   1. packets kube-proxy marked (0x4000) are left to kube-proxy;
//   2. this host's pods to the pod network: no NAT;
//   3. the pod network to this host's pods: no NAT;
//   4. from outside the pod network to this host's pods: no NAT (keeps client addresses);
//   5. pod network to anywhere else except multicast: masquerade;
//   6. from outside the pod network (this host itself) to pods elsewhere: masquerade.
import { isWeftError, WeftError } from "../errors.js";
import { familyOf, formatAnyPrefix, type IpPrefix } from "../net/ip.js";
import type { Kernel } from "./iproute.js";

export const IPMASQ_TABLE = "weft";
export const IPMASQ_CHAIN = "postrouting";
/** kube-proxy's mark for packets it masquerades itself (flannel's KubeProxyMark). */
const KUBE_PROXY_MARK = "0x00004000";
const MULTICAST = { ip: "224.0.0.0/4", ip6: "ff00::/8" } as const;

export interface IpMasqOptions {
  /** The whole pod network of one family (flannel's Network or IPv6Network). */
  network: IpPrefix;
  /** This host's subnet in it. */
  subnet: IpPrefix;
}

const nftFamily = (p: IpPrefix) => (familyOf(p.addr) === 6 ? "ip6" : "ip");

/** The nft script that replaces weft's table of the network's family with the rules for this network and subnet. */
export function ipMasqScript(o: IpMasqOptions): string {
  const fam = nftFamily(o.network);
  const net = formatAnyPrefix(o.network);
  const pods = formatAnyPrefix(o.subnet);
  return [
    // Declaring the table first makes the delete valid whether or not it exists.
    `table ${fam} ${IPMASQ_TABLE}`,
    `delete table ${fam} ${IPMASQ_TABLE}`,
    `table ${fam} ${IPMASQ_TABLE} {`,
    `  chain ${IPMASQ_CHAIN} {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    meta mark & ${KUBE_PROXY_MARK} == ${KUBE_PROXY_MARK} return`,
    `    ${fam} saddr ${pods} ${fam} daddr ${net} return`,
    `    ${fam} saddr ${net} ${fam} daddr ${pods} return`,
    `    ${fam} saddr != ${net} ${fam} daddr ${pods} return`,
    `    ${fam} saddr ${net} ${fam} daddr != ${MULTICAST[fam]} masquerade fully-random`,
    `    ${fam} saddr != ${net} ${fam} daddr ${net} masquerade fully-random`,
    `  }`,
    `}`,
    "",
  ].join("\n");
}

const NFT_FAMILIES = ["ip", "ip6"] as const;
/** Deletes weft's table of an nft family, whether or not it exists. */
const dropScript = (fam: string) => `table ${fam} ${IPMASQ_TABLE}\ndelete table ${fam} ${IPMASQ_TABLE}\n`;

/**
 * Makes weft's tables the ones of the families given, at each publish with ip-masq: their rules,
 * and no table of another family (a dual-stack run's IPv6 one, the node now IPv4 only). A run's
 * tables outlive it (--keep-on-exit, a kill, a failed removal), and an old one exempts only its
 * old subnet, so it masquerades this node's pods to the other nodes'. With none given, the tables
 * go: see removeIpMasq.
 */
export async function syncIpMasq(kernel: Kernel, families: IpMasqOptions[]): Promise<void> {
  const given = new Set(families.map((f) => nftFamily(f.network)));
  const others = NFT_FAMILIES.filter((fam) => !given.has(fam));
  // Only tables that are there go in the transaction, so a family nft cannot handle here (IPv6
  // off) is never named in it. A listing that fails where nft is there: each family's table is
  // dropped on its own, a family nft does not support meaning there is none; any other failure
  // is said after the rest is done (the table may be there).
  const present =
    others.length === 0
      ? []
      : await kernel.nftTables().catch((err: unknown) => {
          if (isWeftError(err, "KERNEL_TOOL_MISSING")) return [] as string[];
          return undefined;
        });
  const refused: string[] = [];
  if (present === undefined)
    for (const fam of others)
      await kernel.nft(dropScript(fam)).catch((err: Error) => {
        if (!/not supported/i.test(err.message)) refused.push(err.message);
      });
  const stale = present ? others.filter((fam) => present.includes(`${fam} ${IPMASQ_TABLE}`)) : [];
  const script = stale.map(dropScript).join("") + families.map(ipMasqScript).join("");
  if (script) await kernel.nft(script);
  if (refused.length > 0)
    throw new WeftError(
      "KERNEL_COMMAND_FAILED",
      `removing weft's nft tables failed (${refused.join("; ")}): remove them by hand (nft delete table ip ${IPMASQ_TABLE}, and ip6)`,
    );
}

/**
 * Deletes weft's tables (both families): at the stop of a run with ip-masq, and at each publish of
 * one without (an earlier run's); nothing happens where there is none, nor without nft. Only those
 * there are named: one transaction naming both failed as a whole where nft has no IPv6
 * (NF_TABLES_IPV6 off), and `table ip weft` stayed. Throws what failed; whether that matters is
 * the caller's to say (a run without ip-masq must start where nft is there but cannot work).
 */
export function removeIpMasq(kernel: Kernel): Promise<void> {
  return syncIpMasq(kernel, []);
}
