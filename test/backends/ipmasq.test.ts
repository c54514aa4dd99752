// ip-masq with nftables in a three-host lab: host1 and host2 run the vxlan backend, host3 is a
// machine on the underlay outside the pod network (it has no route to the pods). With weft's
// table in host1, a pod's packets to host3 leave with host1's underlay address and the replies
// come back; packets to a pod on host2 keep the pod's address. Without the table, host3 cannot
// answer at all. Where nft cannot list the tables, a stale table of a family no longer given
// goes all the same.
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ipMasqScript, removeIpMasq, syncIpMasq } from "../../src/kernel/ipmasq.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost, type LabPod } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { refusingTool } from "../support/refusing-tool.js";
import { udpPeer } from "../support/udp-peer.js";
import { peerFrom, removeLab, startNode, subnetOf, type LabNode } from "./support.js";

/**
 * A directory holding an nft, to put first on PATH, whose listing of tables fails, as nft's does
 * where it cannot read a table another tool wrote; anything else it runs as `nft` (a path) does.
 */
async function listingFails(nft: string): Promise<string> {
  const bin = await mkdtemp(join(tmpdir(), "weft-nft-"));
  await writeFile(
    join(bin, "nft"),
    `#!/bin/sh\nif [ "$*" = "-j list tables" ]; then echo "Error: cannot list" >&2; exit 1; fi\nexec '${nft}' "$@"\n`,
    { mode: 0o755 },
  );
  return bin;
}

/** Sends one UDP datagram from `pod` to `to:port` and returns the source address the receiver saw. */
async function sourceSeenBy(
  receiver: { ns: LabHost["ns"] },
  to: number,
  pod: LabPod,
  port: number,
): Promise<string | undefined> {
  const peer = udpPeer(receiver.ns, { bind: `${formatIpv4(to)}:${port}`, expect: 1, timeoutMs: 4000 });
  await peer.ready;
  await pod.ns.exec([
    process.execPath,
    "-e",
    `
    const s = require("node:dgram").createSocket("udp4");
    s.send(Buffer.from("masq?"), ${port}, "${formatIpv4(to)}", () => s.close());`,
  ]);
  const [got] = await peer.done;
  return got?.from.split(":")[0];
}

async function tables(host: LabHost): Promise<string[]> {
  const j = await host.ns.kernel.nftJson<{ nftables: Array<{ table?: { family: string; name: string } }> }>(["tables"]);
  return j.nftables.flatMap((e) => (e.table ? [`${e.table.family} ${e.table.name}`] : []));
}

describe.skipIf(!canUseNetns())("ip-masq (nftables)", () => {
  let lab: LabCluster;
  let host1: LabHost;
  let host2: LabHost;
  let host3: LabHost;
  const nodes: LabNode[] = [];

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "bmq", hosts: 3 });
    [host1, host2, host3] = lab.hosts;
    await lab.addPods(host1, subnetOf(1), 1, 1450);
    await lab.addPods(host2, subnetOf(2), 1, 1450);
    nodes.push(await startNode(host1, 1, "vxlan"), await startNode(host2, 2, "vxlan"));
    await nodes[0].backend.setPeer(peerFrom(nodes[1]));
    await nodes[1].backend.setPeer(peerFrom(nodes[0]));
  });

  afterAll(() => removeLab(lab, nodes));

  it("without weft's table, a host outside the pod network cannot answer a pod", async () => {
    expect(await tables(host1)).not.toContain("ip weft");
    expect((await ping(host1.pods[0], host3.underlayAddr, { count: 1, timeoutS: 1 })).received).toBe(0);
  });

  it("installs flannel's masquerade rules in table ip weft, and replaces them whole", async () => {
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(7) }]);
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]); // replaces, never adds to
    expect(await tables(host1)).toEqual(["ip weft"]);
    const listed = await host1.ns.exec(["nft", "list", "table", "ip", "weft"]);
    const rules = listed
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /return|masquerade/.test(l));
    expect(rules).toEqual([
      "meta mark & 0x00004000 == 0x00004000 return",
      "ip saddr 198.19.1.0/24 ip daddr 198.19.0.0/16 return",
      "ip saddr 198.19.0.0/16 ip daddr 198.19.1.0/24 return",
      "ip saddr != 198.19.0.0/16 ip daddr 198.19.1.0/24 return",
      "ip saddr 198.19.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
      "ip saddr != 198.19.0.0/16 ip daddr 198.19.0.0/16 masquerade fully-random",
    ]);
    expect(listed).toContain("type nat hook postrouting priority srcnat; policy accept;");
    const j = await host1.ns.kernel.nftJson<{ nftables: Array<{ rule?: unknown }> }>(["table", "ip", "weft"]);
    expect(j.nftables.filter((e) => e.rule)).toHaveLength(6);
    expect(ipMasqScript({ network: LAB_POD_NETWORK, subnet: subnetOf(1) })).toMatch(
      /^table ip weft\ndelete table ip weft\ntable ip weft \{/,
    );
  });

  it("dual-stack: flannel's IPv6 rules in table ip6 weft, in the same transaction; gone when the node publishes as IPv4 only, and with the IPv4 table on exit", async () => {
    const net6 = { network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8001::/64") };
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }, net6]);
    expect((await tables(host1)).sort()).toEqual(["ip weft", "ip6 weft"]);
    const listed = await host1.ns.exec(["nft", "list", "table", "ip6", "weft"]);
    expect(
      listed
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => /return|masquerade/.test(l)),
    ).toEqual([
      "meta mark & 0x00004000 == 0x00004000 return",
      "ip6 saddr 2001:2:0:8001::/64 ip6 daddr 2001:2:0:8000::/49 return",
      "ip6 saddr 2001:2:0:8000::/49 ip6 daddr 2001:2:0:8001::/64 return",
      "ip6 saddr != 2001:2:0:8000::/49 ip6 daddr 2001:2:0:8001::/64 return",
      "ip6 saddr 2001:2:0:8000::/49 ip6 daddr != ff00::/8 masquerade fully-random",
      "ip6 saddr != 2001:2:0:8000::/49 ip6 daddr 2001:2:0:8000::/49 masquerade fully-random",
    ]);
    expect(listed).toContain("type nat hook postrouting priority srcnat; policy accept;");
    // Back to IPv4 only, as a restart of the node as IPv4 only publishes: the IPv6 table an
    // earlier run left goes, the IPv4 one stays as the next tests need it.
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]);
    expect(await tables(host1)).toEqual(["ip weft"]);
    // Both go on exit.
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }, net6]);
    await removeIpMasq(host1.ns.kernel);
    expect(await tables(host1)).toEqual([]);
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]);
  });

  it("without ip-masq, weft's tables an earlier run left go (both families), and none there is nothing to do", async () => {
    const v4 = { network: LAB_POD_NETWORK, subnet: subnetOf(7) };
    const net6 = { network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8001::/64") };
    await host1.ns.kernel.nft(ipMasqScript(v4) + ipMasqScript(net6));
    await host1.ns.exec(["nft", "add", "table", "ip", "users-own"]);
    await removeIpMasq(host1.ns.kernel);
    expect(await tables(host1)).toEqual(["ip users-own"]);
    await removeIpMasq(host1.ns.kernel); // none there: nothing to do
    await host1.ns.exec(["nft", "delete", "table", "ip", "users-own"]);
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]);
  });

  it("a listing of the tables that fails (nft there): a stale table of another family goes all the same", async () => {
    const v4 = { network: LAB_POD_NETWORK, subnet: subnetOf(1) };
    const net6 = { network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8001::/64") };
    await syncIpMasq(host1.ns.kernel, [v4, net6]);
    expect((await tables(host1)).sort()).toEqual(["ip weft", "ip6 weft"]);
    const bin = await listingFails(execFileSync("sh", ["-c", "command -v nft"], { encoding: "utf8" }).trim());
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(host1.ns.kernel.nftTables()).rejects.toThrow(/cannot list/);
      await syncIpMasq(host1.ns.kernel, [v4]);
    } finally {
      process.env.PATH = path;
      await rm(bin, { recursive: true, force: true });
    }
    expect(await tables(host1)).toEqual(["ip weft"]);
  });

  it("a listing of the tables that fails, and a table's drop refused: the removal says so (AGENT_IP_MASQ_REMOVE_FAILED's cause)", async () => {
    const v4 = { network: LAB_POD_NETWORK, subnet: subnetOf(1) };
    const net6 = { network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8001::/64") };
    await syncIpMasq(host1.ns.kernel, [v4, net6]);
    // nft refuses the drop of table ip6 weft; in front of it, the listing fails.
    const nft = await refusingTool("nft");
    await nft.refuse("^delete table ip6 ");
    const bin = await listingFails(join(nft.bin, "nft"));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      // Before, each family's failure was taken for an unsupported family: it resolved, table ip6 weft left.
      await expect(removeIpMasq(host1.ns.kernel)).rejects.toThrow(/removing weft's nft tables failed .*not permitted/);
    } finally {
      process.env.PATH = path;
      await rm(bin, { recursive: true, force: true });
      await nft.remove();
    }
    expect(await tables(host1)).toEqual(["ip6 weft"]);
    await syncIpMasq(host1.ns.kernel, [v4]);
    expect(await tables(host1)).toEqual(["ip weft"]);
  });

  it("where nft has no IPv6 (NF_TABLES_IPV6 off), the exit's removal still drops table ip weft", async () => {
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]);
    // nft refuses any script naming the ip6 family, as the kernel's does without IPv6 nftables.
    const nft = await refusingTool("nft");
    await nft.refuse(" ip6 ");
    const path = process.env.PATH;
    process.env.PATH = `${nft.bin}:${path}`;
    try {
      // Before, one transaction named both families and failed whole: table ip weft stayed.
      await removeIpMasq(host1.ns.kernel);
    } finally {
      process.env.PATH = path;
      await nft.remove();
    }
    expect(await tables(host1)).toEqual([]);
    await syncIpMasq(host1.ns.kernel, [{ network: LAB_POD_NETWORK, subnet: subnetOf(1) }]);
  });

  it("masquerades a pod's packets leaving the pod network: host3 sees host1's underlay address and answers", async () => {
    expect(await sourceSeenBy(host3, host3.underlayAddr, host1.pods[0], 9100)).toBe(formatIpv4(host1.underlayAddr));
    expect((await ping(host1.pods[0], host3.underlayAddr, { count: 2 })).received).toBe(2);
  });

  it("leaves traffic inside the pod network alone: a pod on host2 sees the sending pod's address", async () => {
    const [target] = host2.pods;
    expect(await sourceSeenBy(target, target.addr, host1.pods[0], 9101)).toBe(formatIpv4(host1.pods[0].addr));
  });

  it("removes the table on exit, and host3 cannot answer again", async () => {
    await removeIpMasq(host1.ns.kernel);
    await removeIpMasq(host1.ns.kernel); // no table: nothing to do, no error
    expect(await tables(host1)).not.toContain("ip weft");
    expect((await ping(host1.pods[0], host3.underlayAddr, { count: 1, timeoutS: 1 })).received).toBe(0);
  });
});
