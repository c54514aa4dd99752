// A dual-stack node whose IPv4 reconcile fails at every round still repairs its IPv6 family: the
// families' syncs and reconciles run apart. The IPv4 failure is a real one: flannel.1 is deleted
// and another vxlan device takes its VNI and port, so the kernel refuses to make flannel.1 again.
// And a node whose flannel-v6.1 is deleted while its underlay interface's MTU is below the 1350
// IPv6 needs under VXLAN (the kernel would clamp a new device below 1280 and refuse its address):
// the reconcile refuses to make it (BACKEND_IPV6_MTU) and the IPv6 lane replaces the backend, each
// start refused alike, the node not ready and IPv6 announced down, until the MTU is raised.
// Before, the reconcile made the clamped device and failed on its address at every interval, the
// node ready and its peer routing IPv6 into it all along.
import { describe, expect, it } from "vitest";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, eventually, logRecords, NETWORK } from "./support.js";

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

  it("is not ready and announces IPv6 down, its restarts refused with BACKEND_IPV6_MTU, until the MTU is raised; IPv4 carries on", async () => {
    const [a1, a2] = env.all;
    const ping = async (family: 4 | 6) => {
      for (const [from, to] of [
        [a1, a2],
        [a2, a1],
      ]) {
        const [p, q] = [from.host.pods[0], to.host.pods[0]];
        expect((await pingWhenRouted(p, family === 6 ? q.addr6! : q.addr)).received, `IPv${family}`).toBe(2);
      }
    };
    await ping(6);
    const since = await env.agents.logSize(a1);
    try {
      await a1.host.ns.ip("link set eth0 mtu 1340");
      await a1.host.ns.ip("link del flannel-v6.1");
      const refused = {
        code: "BACKEND_IPV6_MTU",
        message: expect.stringMatching(/^flannel-v6\.1 would get MTU 1270 /),
      };
      const logged = await eventually(
        "a restart to be refused",
        () => logRecords(a1.dir, since),
        (r) => r.some((l) => l.code === "AGENT_BACKEND_RESTART_FAILED"),
        20_000,
      );
      expect(logged.filter((l) => l.code === "AGENT_BACKEND_FAILED")).toEqual([
        expect.objectContaining({ family: 6, err: expect.objectContaining(refused) }),
      ]);
      // Not "trying again at the next interval": the backend is replaced instead.
      expect(logged.filter((l) => l.code === "AGENT_RECONCILE_FAILED")).toEqual([]);
      expect(logged.find((l) => l.code === "AGENT_BACKEND_RESTART_FAILED")).toMatchObject({
        families: [6],
        err: expect.objectContaining(refused),
      });
      const down = await env.agents.status(a1);
      expect(down.ready).toBe(false);
      expect((down as { waitingFor?: string }).waitingFor).toMatch(
        /^a new IPv6 vxlan backend: .*flannel-v6\.1 would get MTU 1270 /,
      );
      expect(await a1.host.ns.ip("-br link show")).not.toContain("flannel-v6");
      // Its peer drops it for IPv6 alone.
      const peer = await env.agents.waitFor(a2, "host1 no longer an IPv6 peer", (s) => s.peers6?.length === 0, 10_000);
      expect(peer.peers).toHaveLength(1);
      await ping(4);
    } finally {
      await a1.host.ns.ip("link set eth0 mtu 1500");
    }
    await env.agents.waitReady(a1, 60_000);
    await ping(6);
    expect(await a1.host.ns.ip("link show dev flannel-v6.1")).toContain("mtu 1430");
  });
});
