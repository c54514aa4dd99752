// flannel's masquerade rules (flanneld --ip-masq), left behind when weft replaces flannel. They
// exempt only flannel's own subnet of this node and masquerade the rest of the pod network's
// traffic; weft's chain (ipmasq.ts) returns without translating for pod-to-pod traffic, so the
// kernel then runs flannel's, which SNATs pods of weft's new subnet to the node's address on their
// way to other nodes (network policies and source addresses break). So they go whenever the
// backends start (the agent's start, a swap, its rollback). flannel writes them in one of these
// forms, removed here and nothing else:
//   - iptables (its default, v0.20 on): a chain FLANNEL-POSTRTG in the nat table, jumped to from
//     POSTROUTING by a rule commented "flanneld masq" (also in ip6tables);
//   - iptables, v0.17 to v0.19: the rules commented "flanneld masq" straight in POSTROUTING
//     (v0.16 and before wrote them uncommented: those cannot be told from the user's own, and stay);
//   - nftables (EnableNFTables): its own tables `ip flannel-ipv4` and `ip6 flannel-ipv6`, which
//     also hold a forward chain that only accepts (it lets nothing through another table drops).
// Only flannel's rules for a network overlapping the agent's go: a flanneld of another network on
// this host (another cluster's) keeps its own. flannel's image writes iptables rules with
// iptables-legacy where the host does, which an nft-backed iptables does not show: where the
// kernel's legacy tables are in use they are looked at with iptables-legacy too. Where a tool is
// not installed (iptables, its legacy form, nft) there is nothing of its form weft could see,
// and it is passed over.
import { isWeftError } from "../errors.js";
import { familyOf, hostPrefix, type IpPrefix, overlaps, parseAddr, parseAnyPrefix } from "../net/ip.js";
import { type BatchFailure, iptablesTool, type Kernel } from "./iproute.js";

const CHAIN = "FLANNEL-POSTRTG";
const JUMP = new RegExp(`^-A POSTROUTING .*-j ${CHAIN}$`);
const COMMENTED = /^-A POSTROUTING .*--comment "flanneld masq"/;
const NFT_TABLES = { 4: "ip flannel-ipv4", 6: "ip6 flannel-ipv6" } as const;

export interface FlannelMasq {
  /** What was removed, each as the shell command that removes it. */
  removed: string[];
  /** What could not be, each with the shell commands that remove it by hand. */
  failures: BatchFailure[];
  /** flannel's rules found for another network, left (the chain or table, with its tool). */
  kept: string[];
}

/** The prefixes an `iptables -S` rule matches with -s or -d (negated too); those it cannot read are passed over. */
function rulePrefixes(rule: string): IpPrefix[] {
  return [...rule.matchAll(/(?:^| )-[sd] (\S+)/g)].flatMap(([, text]) => parsePrefix(text));
}

/** A prefix or a bare address (a host prefix), as iptables and nft print them; nothing for anything else. */
function parsePrefix(text: string): IpPrefix[] {
  try {
    if (text.includes("/")) return [parseAnyPrefix(text)];
    return [hostPrefix(parseAddr(text))];
  } catch {
    return [];
  }
}

/** The addresses and prefixes anywhere in `nft -j list table`'s answer. */
function nftPrefixes(node: unknown): IpPrefix[] {
  if (typeof node === "string") return /^[0-9a-fA-F:.]+$/.test(node) && /[.:]/.test(node) ? parsePrefix(node) : [];
  if (Array.isArray(node)) return node.flatMap(nftPrefixes);
  if (node && typeof node === "object") {
    const p = (node as { prefix?: { addr?: unknown; len?: unknown } }).prefix;
    if (p && typeof p.addr === "string" && typeof p.len === "number") return parsePrefix(`${p.addr}/${p.len}`);
    return Object.values(node).flatMap(nftPrefixes);
  }
  return [];
}

const covers = (prefixes: IpPrefix[], network: IpPrefix) => prefixes.some((p) => overlaps(p, network));

/**
 * Removes flannel's masquerade rules for each network given (the agent's, one per family);
 * returns what was removed, what could not be, and what was left as another network's.
 */
export async function removeFlannelMasq(kernel: Kernel, networks: readonly IpPrefix[]): Promise<FlannelMasq> {
  const out: FlannelMasq = { removed: [], failures: [], kept: [] };
  for (const network of networks) {
    const family = familyOf(network.addr);
    await removeIptables(kernel, family, network, false, out);
    if (await kernel.hasLegacyIptables(family)) await removeIptables(kernel, family, network, true, out);
  }
  let present: string[] = [];
  try {
    present = await kernel.nftTables();
  } catch (err) {
    if (!isWeftError(err, "KERNEL_TOOL_MISSING"))
      out.failures.push({ command: "nft list tables", message: (err as Error).message });
  }
  for (const network of networks) {
    const table = NFT_TABLES[familyOf(network.addr)];
    if (!present.includes(table)) continue;
    const command = `nft delete table ${table}`;
    try {
      if (!covers(nftPrefixes(await kernel.nftJson(["table", ...table.split(" ")])), network)) {
        out.kept.push(`nft table ${table}`);
        continue;
      }
      await kernel.nft(`delete table ${table}\n`);
      out.removed.push(command);
    } catch (err) {
      out.failures.push({ command, message: (err as Error).message });
    }
  }
  return out;
}

/** flannel's rules of one family in iptables' nat table (iptables-legacy's with `legacy`). */
async function removeIptables(
  kernel: Kernel,
  family: 4 | 6,
  network: IpPrefix,
  legacy: boolean,
  out: FlannelMasq,
): Promise<void> {
  const tool = iptablesTool(family, legacy);
  try {
    const rules = await kernel.iptablesRules(family, "nat", legacy);
    if (!rules) return;
    // The chain is flannel's of this network when any of its rules is; its jump goes with it.
    const chain = rules.includes(`-N ${CHAIN}`);
    const ours = chain && rules.some((r) => r.startsWith(`-A ${CHAIN} `) && covers(rulePrefixes(r), network));
    if (chain && !ours) out.kept.push(`${tool} chain ${CHAIN}`);
    const lines = [
      ...rules.filter((r) => (JUMP.test(r) ? ours : COMMENTED.test(r) && covers(rulePrefixes(r), network))),
      ...(ours ? [`-F ${CHAIN}`, `-X ${CHAIN}`] : []),
    ];
    if (lines.length === 0) return;
    const { commands, error } = await kernel.iptablesDelete(family, "nat", lines, legacy);
    if (error) out.failures.push({ command: commands.join("; "), message: error.message });
    else out.removed.push(...commands.filter((c) => !c.startsWith(`${tool} -t nat -F `)));
  } catch (err) {
    out.failures.push({ command: `${tool} -t nat -S`, message: (err as Error).message });
  }
}
