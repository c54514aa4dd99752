// A node that ran kube-flannel with --ip-masq keeps flannel's masquerade rules when weft takes over:
// they exempt only flannel's old subnet of the node and masquerade the rest of the pod network, so
// after weft's own chain returns for pod-to-pod traffic they SNAT its pods to the node's address on
// their way to other nodes. host1 has them as flannel's iptables mode writes them (FLANNEL-POSTRTG
// in the nat table, iptables and ip6tables), host2 as its nftables mode does (tables flannel-ipv4
// and flannel-ipv6), each beside a masquerade rule of the user's own. Dual-stack agents with
// --ip-masq start there: flannel's rules are gone (AGENT_STALE_FLANNEL_MASQ), weft's are in place,
// the user's stay, and pods reach each other across nodes with their own addresses.
import { describe, expect, it } from "vitest";
import { formatAddr, formatHostPort } from "../../src/net/ip.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { LAB_POD_NETWORK6, type LabCluster, type LabPod } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { udpPeer } from "../support/udp-peer.js";
import { agentLab, coded, NETWORK, nftTables } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6);

/** The subnets flannel leased these nodes (never leased by weft: the network's last /24 and /64). */
const OLD = { 4: "198.19.255.0/24", 6: "2001:2:0:ffff::/64" } as const;
const NET = { 4: NETWORK, 6: NETWORK6 } as const;
const MULTICAST = { 4: "224.0.0.0/4", 6: "ff00::/8" } as const;

/** The nat table as flannel's iptables mode leaves it (random-fully, as where the kernel has it). */
const flannelIptables = (f: 4 | 6) => {
  const c = '-m comment --comment "flanneld masq"';
  return [
    "*nat",
    ":FLANNEL-POSTRTG - [0:0]",
    `-A POSTROUTING ${c} -j FLANNEL-POSTRTG`,
    `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${OLD[f]} -d ${NET[f]} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${NET[f]} -d ${OLD[f]} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s ${NET[f]} -d ${OLD[f]} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${NET[f]} ! -d ${MULTICAST[f]} ${c} -j MASQUERADE --random-fully`,
    `-A FLANNEL-POSTRTG ! -s ${NET[f]} -d ${NET[f]} ${c} -j MASQUERADE --random-fully`,
    "COMMIT",
    "",
  ].join("\n");
};

/** flannel's nftables mode's table of a family, as knftables writes it. */
const flannelNft = (f: 4 | 6) => {
  const [fam, table] = f === 4 ? ["ip", "flannel-ipv4"] : ["ip6", "flannel-ipv6"];
  return `table ${fam} ${table} {
  comment "rules for ${table}"
  chain forward {
    comment "chain to accept flannel traffic"
    type filter hook forward priority filter; policy accept;
    ${fam} saddr ${NET[f]} accept
    ${fam} daddr ${NET[f]} accept
  }
  chain postrtg {
    comment "chain to manage traffic masquerading by flannel"
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 return
    ${fam} saddr ${OLD[f]} ${fam} daddr ${NET[f]} return
    ${fam} saddr ${NET[f]} ${fam} daddr ${OLD[f]} return
    ${fam} saddr != ${OLD[f]} ${fam} daddr ${NET[f]} return
    ${fam} saddr ${NET[f]} ${fam} daddr != ${MULTICAST[f]} masquerade fully-random
    ${fam} saddr != ${NET[f]} ${fam} daddr ${NET[f]} masquerade fully-random
  }
}
`;
};

/** A masquerade rule of the user's own (the underlay's), in POSTROUTING beside flannel's. */
const USER_RULE = {
  4: '-s 198.18.0.0/24 -o eth0 -m comment --comment "users own" -j MASQUERADE',
  6: '-s 2001:2::/64 -o eth0 -m comment --comment "users own" -j MASQUERADE',
} as const;
const USER_NFT =
  'table ip users-own {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 198.18.0.0/24 oifname "eth0" masquerade\n  }\n}\n';

const natRules = async (lab: LabCluster, host: number, f: 4 | 6) =>
  (await lab.hosts[host].ns.exec([f === 6 ? "ip6tables" : "iptables", "-t", "nat", "-S"]))
    .split("\n")
    .filter((l) => l.startsWith("-N") || l.startsWith("-A"));

/** The source address a datagram from `from` has when it reaches `to` (tries a few times: bounded). */
const sourceSeen = async (from: LabPod, to: LabPod, f: 4 | 6): Promise<string> => {
  const [src, dst] = f === 4 ? [from.addr, to.addr] : [from.addr6!, to.addr6!];
  for (let i = 0; i < 5; i++) {
    const server = udpPeer(to.ns, { bind: formatHostPort(formatAddr(dst), 9090), expect: 1, timeoutMs: 1000 });
    await server.ready;
    const sendTo = formatHostPort(formatAddr(dst), 9090);
    await udpPeer(from.ns, { bind: formatHostPort(formatAddr(src), 0), sendTo, send: [new Uint8Array([i])] }).done;
    const [got] = await server.done;
    // udp-peer's `from` is address:port, unbracketed for IPv6 too.
    if (got) return got.from.replace(/:\d+$/, "");
  }
  return "nothing arrived";
};

describe.skipIf(!canUseNetns())("agents: flannel's masquerade rules left from kube-flannel --ip-masq", () => {
  const env = agentLab({
    tag: "afm",
    hosts: 2,
    flags: () => ["--ip-masq"],
    ipv6: true,
    conf: () => ({ Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "vxlan" } }),
    beforeStart: async (lab) => {
      const [h1, h2] = lab.hosts.map((h) => h.ns.kernel);
      for (const f of [4, 6] as const) {
        await h1.iptablesRestore(f, `*nat\n-A POSTROUTING ${USER_RULE[f]}\nCOMMIT\n`);
        await h1.iptablesRestore(f, flannelIptables(f));
        await h2.nft(flannelNft(f));
      }
      await h2.nft(USER_NFT);
      // As flannel left them: the test checks what the agent found, not what it never saw.
      expect(await natRules(lab, 0, 4)).toContain("-N FLANNEL-POSTRTG");
      expect(await nftTables(lab.hosts[1])).toEqual(["ip flannel-ipv4", "ip6 flannel-ipv6", "ip users-own"]);
    },
    settled: {
      what: "its peer of each family",
      check: (s) => s.ready && s.peers.length === 1 && s.peers6?.length === 1,
    },
  });

  it("host1: FLANNEL-POSTRTG and its jump are gone from iptables and ip6tables, the user's rule stays", async () => {
    for (const f of [4, 6] as const)
      expect(await natRules(env.lab, 0, f), `IPv${f}`).toEqual([`-A POSTROUTING ${USER_RULE[f]}`]);
    expect(await nftTables(env.lab.hosts[0])).toEqual(expect.arrayContaining(["ip weft", "ip6 weft"]));
    const [logged] = await coded(env.all[0].dir, 0, "AGENT_STALE_FLANNEL_MASQ");
    expect(logged?.removed).toEqual([
      'iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      "iptables -t nat -X FLANNEL-POSTRTG",
      'ip6tables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      "ip6tables -t nat -X FLANNEL-POSTRTG",
    ]);
  });

  it("host2: the tables flannel-ipv4 and flannel-ipv6 are gone, the user's table stays", async () => {
    expect((await nftTables(env.lab.hosts[1])).sort()).toEqual(["ip users-own", "ip weft", "ip6 weft"]);
    const logged = await coded(env.all[1].dir, 0, "AGENT_STALE_FLANNEL_MASQ");
    expect(logged.map((l) => l.removed)).toEqual([
      ["nft delete table ip flannel-ipv4", "nft delete table ip6 flannel-ipv6"],
    ]);
  });

  it.each([4, 6] as const)("pods reach the other node's pods with their own IPv%i addresses, both ways", async (f) => {
    const [p1, p2] = env.all.map((a) => a.host.pods[0]);
    const addr = (p: LabPod) => formatAddr(f === 4 ? p.addr : p.addr6!);
    expect(await sourceSeen(p1, p2, f)).toBe(addr(p1));
    expect(await sourceSeen(p2, p1, f)).toBe(addr(p2));
  });
});
