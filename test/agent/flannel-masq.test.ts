// A node that ran kube-flannel with --ip-masq keeps flannel's masquerade rules when weft takes over:
// they exempt only flannel's old subnet of the node and masquerade the rest of the pod network, so
// after weft's own chain returns for pod-to-pod traffic they SNAT its pods to the node's address on
// their way to other nodes. host1 has them as flannel's iptables mode writes them (FLANNEL-POSTRTG
// in the nat table, iptables and ip6tables), host2 as its nftables mode does (tables flannel-ipv4
// and flannel-ipv6), host3 as v0.17 to v0.19 wrote them (commented rules straight in POSTROUTING)
// with iptables-legacy, which the nft-backed iptables does not show; each beside a masquerade rule
// of the user's own, and beside flannel's rules of another network (another flanneld's, of
// 198.19.128.0/17 and 2001:2:0:c000::/50) in the other form. host3 has no nft installed. Dual-stack
// agents start there: flannel's rules of their network are gone (AGENT_STALE_FLANNEL_MASQ), weft's
// are in place, the user's and the other network's stay, and pods reach each other across nodes
// with their own addresses. Then a flanneld still running writes its rules again: the reconcile
// removes them and warns once (AGENT_FLANNEL_MASQ_BACK).
import { mkdtemp, readdir, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatAddr, formatHostPort } from "../../src/net/ip.js";
import type { LabCluster, LabPod } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { udpPeer } from "../support/udp-peer.js";
import { agentLab, coded, nftTables } from "./support.js";

/** The agents' networks: half of the lab's pod range each, so that another network fits beside them. */
const NETWORK = "198.19.0.0/17";
const NETWORK6 = "2001:2:0:8000::/50";

/** A pod network and the subnet flannel leased this node in it (never leased by weft: the network's last /24 and /64). */
interface FlannelNet {
  4: { net: string; old: string };
  6: { net: string; old: string };
}
const OURS: FlannelNet = {
  4: { net: NETWORK, old: "198.19.127.0/24" },
  6: { net: NETWORK6, old: "2001:2:0:bfff::/64" },
};
/** Another flanneld's network on these hosts (another cluster's): its rules stay. */
const OTHER: FlannelNet = {
  4: { net: "198.19.128.0/17", old: "198.19.255.0/24" },
  6: { net: "2001:2:0:c000::/50", old: "2001:2:0:ffff::/64" },
};
const MULTICAST = { 4: "224.0.0.0/4", 6: "ff00::/8" } as const;

/** The nat table as flannel's iptables mode leaves it (random-fully, as where the kernel has it). */
const flannelIptables = (n: FlannelNet, f: 4 | 6) => {
  const c = '-m comment --comment "flanneld masq"';
  const { net, old } = n[f];
  return [
    "*nat",
    ":FLANNEL-POSTRTG - [0:0]",
    `-A POSTROUTING ${c} -j FLANNEL-POSTRTG`,
    `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${old} -d ${net} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${net} -d ${old} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s ${net} -d ${old} ${c} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${net} ! -d ${MULTICAST[f]} ${c} -j MASQUERADE --random-fully`,
    `-A FLANNEL-POSTRTG ! -s ${net} -d ${net} ${c} -j MASQUERADE --random-fully`,
    "COMMIT",
    "",
  ].join("\n");
};

/** flannel v0.17 to v0.19's rules, commented, straight in POSTROUTING (random-fully). */
const flannelPostrouting = (n: FlannelNet, f: 4 | 6) => {
  const c = '-m comment --comment "flanneld masq"';
  const { net, old } = n[f];
  return [
    `-A POSTROUTING -s ${net} -d ${net} ${c} -j RETURN`,
    `-A POSTROUTING -s ${net} ! -d ${MULTICAST[f]} ${c} -j MASQUERADE --random-fully`,
    `-A POSTROUTING ! -s ${net} -d ${old} ${c} -j RETURN`,
    `-A POSTROUTING ! -s ${net} -d ${net} ${c} -j MASQUERADE --random-fully`,
  ];
};

/** flannel's nftables mode's table of a family, as knftables writes it. */
const flannelNft = (n: FlannelNet, f: 4 | 6) => {
  const [fam, table] = f === 4 ? ["ip", "flannel-ipv4"] : ["ip6", "flannel-ipv6"];
  const { net, old } = n[f];
  return `table ${fam} ${table} {
  comment "rules for ${table}"
  chain forward {
    comment "chain to accept flannel traffic"
    type filter hook forward priority filter; policy accept;
    ${fam} saddr ${net} accept
    ${fam} daddr ${net} accept
  }
  chain postrtg {
    comment "chain to manage traffic masquerading by flannel"
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 return
    ${fam} saddr ${old} ${fam} daddr ${net} return
    ${fam} saddr ${net} ${fam} daddr ${old} return
    ${fam} saddr != ${old} ${fam} daddr ${net} return
    ${fam} saddr ${net} ${fam} daddr != ${MULTICAST[f]} masquerade fully-random
    ${fam} saddr != ${net} ${fam} daddr ${net} masquerade fully-random
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

const natRules = async (lab: LabCluster, host: number, f: 4 | 6, legacy = false) =>
  (
    await lab.hosts[host].ns.exec([
      `${f === 6 ? "ip6tables" : "iptables"}${legacy ? "-legacy" : ""}`,
      "-t",
      "nat",
      "-S",
    ])
  )
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

/** `tool -t nat -D ...` for each `-A ...` rule. */
const deletes = (tool: string, rules: string[]) => rules.map((r) => `${tool} -t nat -D${r.slice(2)}`);

describe.skipIf(!canUseNetns())("agents: flannel's masquerade rules left from kube-flannel --ip-masq", () => {
  // host3's PATH: every tool of the test's own but nft (Debian's iptables package comes without it).
  let noNft = "";
  beforeAll(async () => {
    noNft = await mkdtemp(join(tmpdir(), "weft-no-nft-"));
    for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean))
      for (const name of await readdir(dir).catch(() => []))
        if (name !== "nft") await symlink(join(dir, name), join(noNft, name)).catch(() => undefined);
  });
  afterAll(async () => {
    if (noNft) await rm(noNft, { recursive: true, force: true });
  });

  const env = agentLab({
    tag: "afm",
    hosts: 3,
    // Reconciles each second: flannel's rules written again are seen soon.
    flags: (a) => [...(a.host.name.endsWith("3") ? [] : ["--ip-masq"]), "--reconcile-interval", "1"],
    setup: (a) => {
      if (a.host.name.endsWith("3")) a.env = { PATH: noNft };
    },
    ipv6: true,
    conf: () => ({ Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "vxlan" } }),
    beforeStart: async (lab) => {
      const [h1, h2, h3] = lab.hosts.map((h) => h.ns.kernel);
      for (const f of [4, 6] as const) {
        await h1.iptablesRestore(f, `*nat\n-A POSTROUTING ${USER_RULE[f]}\nCOMMIT\n`);
        await h1.iptablesRestore(f, flannelIptables(OURS, f));
        await h1.nft(flannelNft(OTHER, f));
        await h2.nft(flannelNft(OURS, f));
        await h2.iptablesRestore(f, flannelIptables(OTHER, f));
        const postrouting = [
          `-A POSTROUTING ${USER_RULE[f]}`,
          ...flannelPostrouting(OURS, f),
          ...flannelPostrouting(OTHER, f),
        ];
        await h3.iptablesRestore(f, `*nat\n${postrouting.join("\n")}\nCOMMIT\n`, true);
      }
      await h2.nft(USER_NFT);
      // As flannel left them: the test checks what the agent found, not what it never saw.
      expect(await natRules(lab, 0, 4)).toContain("-N FLANNEL-POSTRTG");
      // `ip nat` and `ip6 nat`: the nft-backed iptables' own.
      expect((await nftTables(lab.hosts[1])).sort()).toEqual([
        "ip flannel-ipv4",
        "ip nat",
        "ip users-own",
        "ip6 flannel-ipv6",
        "ip6 nat",
      ]);
      expect(await natRules(lab, 2, 6, true)).toHaveLength(9);
      expect(await natRules(lab, 2, 6)).toEqual([]);
    },
    settled: {
      what: "its peers of each family",
      check: (s) => s.ready && s.peers.length === 2 && s.peers6?.length === 2,
    },
  });

  it("host1: FLANNEL-POSTRTG and its jump are gone from iptables and ip6tables; the user's rule and the other network's nft tables stay", async () => {
    for (const f of [4, 6] as const)
      expect(await natRules(env.lab, 0, f), `IPv${f}`).toEqual([`-A POSTROUTING ${USER_RULE[f]}`]);
    expect((await nftTables(env.lab.hosts[0])).sort()).toEqual([
      "ip flannel-ipv4",
      "ip nat",
      "ip weft",
      "ip6 flannel-ipv6",
      "ip6 nat",
      "ip6 weft",
    ]);
    const [logged] = await coded(env.all[0].dir, 0, "AGENT_STALE_FLANNEL_MASQ");
    expect(logged?.removed).toEqual([
      'iptables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      "iptables -t nat -X FLANNEL-POSTRTG",
      'ip6tables -t nat -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      "ip6tables -t nat -X FLANNEL-POSTRTG",
    ]);
  });

  it("host2: the tables flannel-ipv4 and flannel-ipv6 are gone; the user's table and the other network's FLANNEL-POSTRTG stay", async () => {
    expect((await nftTables(env.lab.hosts[1])).sort()).toEqual([
      "ip nat",
      "ip users-own",
      "ip weft",
      "ip6 nat",
      "ip6 weft",
    ]);
    for (const f of [4, 6] as const) {
      const rules = await natRules(env.lab, 1, f);
      expect(rules, `IPv${f}`).toContain("-N FLANNEL-POSTRTG");
      expect(
        rules.filter((r) => r.startsWith("-A FLANNEL-POSTRTG ")),
        `IPv${f}`,
      ).toHaveLength(6);
    }
    const logged = await coded(env.all[1].dir, 0, "AGENT_STALE_FLANNEL_MASQ");
    expect(logged.map((l) => l.removed)).toEqual([
      ["nft delete table ip flannel-ipv4", "nft delete table ip6 flannel-ipv6"],
    ]);
  });

  it("host3: the network's v0.17 rules in iptables-legacy's POSTROUTING are gone, the other network's and the user's stay; no nft is no failure", async () => {
    for (const f of [4, 6] as const)
      expect(await natRules(env.lab, 2, f, true), `IPv${f}`).toEqual([
        `-A POSTROUTING ${USER_RULE[f]}`,
        ...flannelPostrouting(OTHER, f),
      ]);
    const logged = await coded(env.all[2].dir, 0, "AGENT_STALE_FLANNEL_MASQ");
    expect(logged).toEqual([
      expect.objectContaining({
        removed: [
          ...deletes("iptables-legacy", flannelPostrouting(OURS, 4)),
          ...deletes("ip6tables-legacy", flannelPostrouting(OURS, 6)),
        ],
      }),
    ]);
  });

  it.each([4, 6] as const)("pods reach the other node's pods with their own IPv%i addresses, both ways", async (f) => {
    const [p1, p2] = env.all.map((a) => a.host.pods[0]);
    const addr = (p: LabPod) => formatAddr(f === 4 ? p.addr : p.addr6!);
    expect(await sourceSeen(p1, p2, f)).toBe(addr(p1));
    expect(await sourceSeen(p2, p1, f)).toBe(addr(p2));
  });

  it("host1: flannel's rules written again (flanneld still running) are removed again, with one warning", async () => {
    const [h1, a1] = [env.lab.hosts[0], env.all[0]];
    for (let i = 0; i < 2; i++) {
      await h1.ns.kernel.iptablesRestore(4, flannelIptables(OURS, 4));
      await expect
        .poll(() => natRules(env.lab, 0, 4), { timeout: 20_000, interval: 250 })
        .toEqual([`-A POSTROUTING ${USER_RULE[4]}`]);
      // The warning follows the removal at once: once, in the first round and still in the second.
      await expect
        .poll(() => coded(a1.dir, 0, "AGENT_FLANNEL_MASQ_BACK"), { timeout: 5000, interval: 100 })
        .toEqual([
          expect.objectContaining({
            msg: expect.stringMatching(/is flanneld still running\? stop kube-flannel first/),
          }),
        ]);
    }
  });
});
