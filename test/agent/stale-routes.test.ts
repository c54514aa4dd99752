// A userspace backend's start removes the per-peer gateway routes flannel's host-gw (or vxlan
// DirectRouting, or weft's kernel backend kept with --keep-on-exit) left in the pod network: they
// are more specific than the TUN device's route for the whole network and took pod traffic past
// the dataplane. A real dual-stack wasm-vxlan agent starts on a host holding such routes of both
// families, beside a route via the same gateway outside the pod network and one on another device,
// which stay, and one on a nexthop object, which `route del` cannot match: it stays and is said to.
import { describe, expect, it } from "vitest";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, NETWORK } from "./support.js";

/** Routes flannel's host-gw leaves: a peer's /24 (/64) via its underlay address (host 2's, not in this lab). */
const STALE = ["198.19.5.0/24 via 198.18.0.12 dev eth0", "2001:2:0:8005::/64 via 2001:2::12 dev eth0"];
/** Via the same gateway, outside the pod network: not weft's. */
const FOREIGN = "198.18.0.128/25 via 198.18.0.12 dev eth0";
/** In the pod network via a gateway on another device than the underlay: someone else's (a VM's behind a pod). */
const OTHER_DEV = "198.19.7.0/24 via 198.18.0.200 dev asr-dummy onlink";
/** On a nexthop object (a routing daemon's): `route del … via … dev …` does not match it, so it stays and is said to. */
const ON_NEXTHOP = "198.19.6.0/24 nhid 77";

describe.skipIf(!canUseNetns())("agent, stale gateway routes of the pod network", () => {
  const env = agentLab({
    tag: "asr",
    hosts: 1,
    ipv6: true,
    conf: () => ({
      Network: NETWORK,
      EnableIPv6: true,
      IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
      Backend: { Type: "wasm-vxlan", Workers: 1 },
    }),
    settled: { what: "ready", check: (s) => s.ready },
    beforeStart: async (lab) => {
      const { ns } = lab.hosts[0];
      await ns.ip("link add asr-dummy up type veth peer name asr-peer");
      await ns.ip("link set asr-peer up");
      await ns.ip("nexthop add id 77 via 198.18.0.12 dev eth0");
      for (const r of [...STALE, FOREIGN, OTHER_DEV, ON_NEXTHOP]) await ns.ip(`route add ${r}`);
    },
  });

  it("wasm-vxlan removes them at start (BACKEND_STALE_ROUTE): the subnets go to the TUN devices; the route outside the network stays", async () => {
    const ns = env.all[0].host.ns;
    expect(await ns.ip("-4 route show 198.19.5.0/24")).toBe("");
    expect(await ns.ip("-6 route show 2001:2:0:8005::/64")).toBe("");
    expect(await ns.ip("-4 route get 198.19.5.1")).toMatch(/ dev weft\.1 /);
    expect(await ns.ip("-6 route get 2001:2:0:8005::1")).toMatch(/ dev weft-v6\.1 /);
    expect((await ns.ip("-4 route show 198.18.0.128/25")).trim()).toBe("198.18.0.128/25 via 198.18.0.12 dev eth0");
    expect((await ns.ip("-4 route show 198.19.7.0/24")).trim()).toBe(
      "198.19.7.0/24 via 198.18.0.200 dev asr-dummy onlink",
    );
    expect((await ns.ip("-4 route show 198.19.6.0/24")).trim()).toBe("198.19.6.0/24 nhid 77 via 198.18.0.12 dev eth0");
    const logged = await coded(env.all[0].dir, 0, "BACKEND_STALE_ROUTE");
    expect(
      logged
        .filter((r) => r.dst)
        .map((r) => `${r.dst} via ${r.via} dev ${r.dev}`)
        .sort(),
    ).toEqual(STALE);
    // The route on the nexthop object is said to stay, with the command that did not remove it.
    expect(logged.filter((r) => !r.dst).map((r) => r.command)).toEqual([
      "route del 198.19.6.0/24 via 198.18.0.12 dev eth0",
    ]);
  });
});
