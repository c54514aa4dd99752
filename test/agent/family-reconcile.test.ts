// A dual-stack node whose IPv4 reconcile fails at every round still repairs its IPv6 family: the
// families' syncs and reconciles run apart. The IPv4 failure is a real one: flannel.1 is deleted
// and another vxlan device takes its VNI and port, so the kernel refuses to make flannel.1 again.
import { describe, expect, it } from "vitest";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, eventually, NETWORK } from "./support.js";

describe.skipIf(!canUseNetns())("agents, dual-stack: one family's failing reconcile", () => {
  const env = agentLab({
    tag: "afr",
    hosts: 2,
    ipv6: true,
    conf: () => ({
      Network: NETWORK,
      EnableIPv6: true,
      IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
      Backend: { Type: "vxlan" },
    }),
    flags: () => ["--reconcile-interval", "1"],
    settled: {
      what: "both families' peer",
      check: (s) => s.ready && s.peers.length === 1 && s.peers6?.length === 1,
    },
  });

  it("leaves the other family's drift repaired, and logs the failing family's error with its code", async () => {
    const [a1, a2] = env.all;
    const ns = a1.host.ns;
    const peer6 = env.settled.get(a2.host.name)!.subnet6!;
    const route6 = async () => (await ns.ip(`-6 route show ${peer6}`)).trim();
    expect(await route6()).toContain("dev flannel-v6.1");
    const since = await env.agents.logSize(a1);
    await ns.ip("link del flannel.1");
    await ns.ip("link add blocker type vxlan id 1 dev eth0 dstport 8472 nolearning");
    try {
      const failed = await eventually(
        "an IPv4 reconcile failure",
        async () =>
          (await env.agents.errorLines(a1, since)).find((l) => l.code === "AGENT_RECONCILE_FAILED") as
            | { family?: number; err?: { code?: string } }
            | undefined,
        (l) => l !== undefined,
      );
      expect(failed).toMatchObject({ family: 4, err: { code: "KERNEL_COMMAND_FAILED" } });
      await ns.ip(`-6 route del ${peer6}`);
      // Put back by a later round, which fails for IPv4 again on the way.
      expect(await eventually("the IPv6 route back", route6, (r) => r !== "")).toContain("dev flannel-v6.1");
    } finally {
      await ns.ip("link del blocker");
    }
    await eventually(
      "flannel.1 back",
      () => ns.ip("link show"),
      (l) => l.includes("flannel.1:"),
    );
  });
});
