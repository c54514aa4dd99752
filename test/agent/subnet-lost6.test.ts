// A dual-stack node whose IPv6 subnet the ring gives to another node restarts only its IPv6
// backend instance: its IPv4 subnet, device and pod traffic stay as they were. The loss is made
// the way a restored state dir makes it: host1 is killed, its saved IPv6 ring is edited to say
// host1 took host2's IPv6 subnet (one version later, as a transfer would), and host1 is started
// again; host2 merges the newer version and loses that subnet (LEASE_LOST).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { STATE_FILE_IPV6 } from "../../src/control/lease/store.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv6, formatPrefix6, parsePrefix6, prefixContains6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, restartGivingSubnet, NETWORK } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6);

describe.skipIf(!canUseNetns())("agents, dual-stack: a lost IPv6 subnet", () => {
  const env = agentLab({
    tag: "al6",
    hosts: 2,
    ipv6: true,
    conf: () => ({ Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "vxlan" } }),
    settled: {
      what: "both families' peer",
      check: (s) => s.ready && s.peers.length === 1 && s.peers6?.length === 1,
    },
  });

  it("restarts only the IPv6 instance: a new IPv6 subnet, flannel-v6.1 made again, flannel.1 and the IPv4 subnet and traffic untouched", async () => {
    const [a1, a2] = env.all;
    const before = await env.agents.status(a2);
    const [v4, lost] = [before.subnet!, before.subnet6!];
    const ifindex = async (dev: string) =>
      (await a2.host.ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "dev", dev]))[0].ifindex;
    const [flannel4, flannel6] = [await ifindex("flannel.1"), await ifindex("flannel-v6.1")];
    const since = await env.agents.logSize(a2);

    // host1's saved IPv6 ring now says host1 took host2's subnet, one version on.
    await restartGivingSubnet(env.agents, a1, STATE_FILE_IPV6, a2.host.name, a1.host.name, false);

    const after = await env.agents.waitFor(
      a2,
      "a new IPv6 subnet, ready again",
      (s) => s.ready && s.subnet6 !== undefined && s.subnet6 !== lost && s.peers6?.length === 1,
      60_000,
    );
    expect(after.subnet).toBe(v4);
    expect(prefixContains6(LAB_POD_NETWORK6, parsePrefix6(after.subnet6!).addr)).toBe(true);
    const log = (await readFile(join(a2.dir, "agent.log"))).subarray(since).toString("utf8");
    const codes = log.split("\n").flatMap((l) => {
      try {
        const r = JSON.parse(l) as { code?: string; subnet?: string; from?: string; to?: string };
        return r.code?.startsWith("AGENT_SUBNET_") ? [r] : [];
      } catch {
        return [];
      }
    });
    expect(codes).toEqual([
      expect.objectContaining({ code: "AGENT_SUBNET_LOST", subnet: lost }),
      expect.objectContaining({ code: "AGENT_SUBNET_REPLACED", from: lost, to: after.subnet6 }),
    ]);
    // The IPv4 instance was never stopped: the same device; the IPv6 one was made again.
    expect(await ifindex("flannel.1")).toBe(flannel4);
    expect(await ifindex("flannel-v6.1")).not.toBe(flannel6);
    const written = await env.agents.subnetEnv(a2);
    expect(written.text).toContain(`FLANNEL_IPV6_SUBNET=${formatIpv6(parsePrefix6(after.subnet6!).addr + 1n)}/64\n`);
    expect(written.text).toContain(`FLANNEL_SUBNET=${v4.replace(/\.0\/24$/, ".1/24")}\n`);
    // IPv4 pod traffic as before; a pod made now on host2 gets the new IPv6 subnet and is reached over IPv6.
    expect((await ping(a1.host.pods[0], a2.host.pods[0].addr, { count: 2 })).received).toBe(2);
    const fresh = await env.lab.addPod(a2.host, env.agents.subnetFile(a2));
    expect(prefixContains6(parsePrefix6(after.subnet6!), fresh.addr6!)).toBe(true);
    expect((await pingWhenRouted(a1.host.pods[0], fresh.addr6!)).received).toBe(2);
  });
});
