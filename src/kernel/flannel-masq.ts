// flannel's masquerade rules (flanneld --ip-masq), left behind when weft replaces flannel. They
// exempt only flannel's own subnet of this node and masquerade the rest of the pod network's
// traffic; weft's chain (ipmasq.ts) returns without translating for pod-to-pod traffic, so the
// kernel then runs flannel's, which SNATs pods of weft's new subnet to the node's address on their
// way to other nodes (network policies and source addresses break). So they go before the
// backends start. flannel writes them in one of two forms, both removed here and nothing else:
//   - iptables (its default): a chain FLANNEL-POSTRTG in the nat table, jumped to from POSTROUTING
//     by a rule commented "flanneld masq" (also in ip6tables); where the host has no iptables
//     there is nothing of this form that weft could see, and it is passed over;
//   - nftables (EnableNFTables): its own tables `ip flannel-ipv4` and `ip6 flannel-ipv6`, which
//     also hold a forward chain that only accepts (it lets nothing through another table drops).
import type { BatchFailure, Kernel } from "./iproute.js";

const CHAIN = "FLANNEL-POSTRTG";
/** A POSTROUTING rule of flannel's: its jump to CHAIN, or any rule it commented as its masquerade. */
const FLANNEL_RULE = new RegExp(`^-A POSTROUTING .*(-j ${CHAIN}$|--comment "flanneld masq")`);
const NFT_TABLES = { 4: "ip flannel-ipv4", 6: "ip6 flannel-ipv6" } as const;

/**
 * Removes flannel's masquerade rules of the families given; returns what was removed, each as the
 * command that removes it, and what could not be.
 */
export async function removeFlannelMasq(
  kernel: Kernel,
  families: ReadonlyArray<4 | 6>,
): Promise<{ removed: string[]; failures: BatchFailure[] }> {
  const removed: string[] = [];
  const failures: BatchFailure[] = [];
  for (const family of families) {
    const tool = family === 6 ? "ip6tables" : "iptables";
    let deletes: string[] = [];
    try {
      const rules = await kernel.iptablesRules(family, "nat");
      if (!rules) continue;
      deletes = [
        ...rules.filter((r) => FLANNEL_RULE.test(r)).map((r) => `-D${r.slice(2)}`),
        ...(rules.includes(`-N ${CHAIN}`) ? [`-F ${CHAIN}`, `-X ${CHAIN}`] : []),
      ];
      if (deletes.length === 0) continue;
      await kernel.iptablesRestore(family, `*nat\n${deletes.join("\n")}\nCOMMIT\n`);
      removed.push(...deletes.filter((d) => !d.startsWith("-F")).map((d) => `${tool} -t nat ${d}`));
    } catch (err) {
      failures.push({ command: `${tool} -t nat ${deletes.join("; ") || "-S"}`, message: (err as Error).message });
    }
  }
  let present: string[] = [];
  try {
    present = await kernel.nftTables();
  } catch (err) {
    failures.push({ command: "nft list tables", message: (err as Error).message });
  }
  for (const table of families.map((f) => NFT_TABLES[f]).filter((t) => present.includes(t))) {
    try {
      await kernel.nft(`delete table ${table}\n`);
      removed.push(`nft delete table ${table}`);
    } catch (err) {
      failures.push({ command: `nft delete table ${table}`, message: (err as Error).message });
    }
  }
  return { removed, failures };
}
