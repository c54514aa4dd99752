// The chaos monitor's subnet check (src/lab/chaos/observe.ts: subnetFindings), which the monitor
// runs on every sample and the reclaim scenario on its settled cluster, fed snapshots as a
// dual-stack lab's agents would give them: it must find overlaps in every family it is given.
import { describe, expect, it } from "vitest";
import type { AgentStatus, LabAgent } from "../../src/lab/agents.js";
import type { LabHost } from "../../src/lab/cluster.js";
import {
  type Family,
  type FamilyView,
  type NodeView,
  type Snapshot,
  subnetFindings,
} from "../../src/lab/chaos/observe.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { parseIpv6 } from "../../src/net/ipv6.js";

/** An agent on host `n` (underlay 198.18.0.n and 2001:2::n); the check reads only its host's name and addresses. */
function agent(n: number): LabAgent {
  const host = {
    name: `host${n}`,
    underlayAddr: parseIpv4(`198.18.0.${n}`),
    underlayAddr6: parseIpv6(`2001:2::${n}`),
  } as unknown as LabHost;
  return { host, dir: `/nonexistent/host${n}`, stateDir: `/nonexistent/host${n}` };
}

/** A ready agent's view: its own subnets in /status and subnet.env, no peers or routes yet. */
function view(a: LabAgent, subnet: string, subnet6: string): NodeView {
  const status = { node: a.host.name, ready: true, subnet, subnet6, peers: [], peers6: [] } as unknown as AgentStatus;
  const families = new Map<Family, FamilyView>([
    [4, { envSubnet: subnet, routes: new Map() }],
    [6, { envSubnet: subnet6, routes: new Map() }],
  ]);
  return { agent: a, status, families };
}

describe("chaos monitor: the subnet check", () => {
  const [a1, a2] = [agent(1), agent(2)];
  const live = new Set([a1, a2]);
  const snapshot = (views: NodeView[]): Snapshot => ({ at: 0, views });

  it("finds two agents holding one IPv6 subnet while their IPv4 subnets differ", () => {
    const s = snapshot([
      view(a1, "198.19.1.0/24", "2001:2:0:8000::/64"),
      view(a2, "198.19.2.0/24", "2001:2:0:8000::/64"),
    ]);
    expect(subnetFindings(s, live, [a1, a2], [4, 6])).toEqual([
      {
        kind: "same-subnet",
        detail: "2001:2:0:8000::/64 held by host1 and 2001:2:0:8000::/64 by host2",
        more: ", according to host1's /status, host1's subnet.env, host2's /status, host2's subnet.env",
      },
    ]);
  });

  it("finds an IPv6 subnet inside another one, and nothing once the IPv6 subnets are apart", () => {
    const nested = snapshot([
      view(a1, "198.19.1.0/24", "2001:2:0:8000::/56"),
      view(a2, "198.19.2.0/24", "2001:2:0:8000::/64"),
    ]);
    expect(subnetFindings(nested, live, [a1, a2], [4, 6]).map((x) => x.detail)).toEqual([
      "2001:2:0:8000::/56 held by host1 and 2001:2:0:8000::/64 by host2",
    ]);
    const apart = snapshot([
      view(a1, "198.19.1.0/24", "2001:2:0:8000::/64"),
      view(a2, "198.19.2.0/24", "2001:2:0:8001::/64"),
    ]);
    expect(subnetFindings(apart, live, [a1, a2], [4, 6])).toEqual([]);
  });

  it("finds an IPv6 overlap that only a route shows, attributed to the host the route leads to", () => {
    const v1 = view(a1, "198.19.1.0/24", "2001:2:0:8000::/64");
    const v2 = view(a2, "198.19.2.0/24", "2001:2:0:8001::/64");
    // host2 routes host1's IPv6 subnet to itself.
    v2.families.get(6)!.routes.set("2001:2:0:8000::/64", "2001:2::2");
    // host1 routes its own IPv6 subnet to host2's underlay: host2 holds it by host1's routes.
    v1.families.get(6)!.routes.set("2001:2:0:8000::/64", "2001:2::2");
    expect(subnetFindings(snapshot([v1, v2]), live, [a1, a2], [4, 6])).toEqual([
      { kind: "route-to-self", detail: "host2 routes 2001:2:0:8000::/64 to itself", more: "" },
      {
        kind: "same-subnet",
        detail: "2001:2:0:8000::/64 held by host1 and 2001:2:0:8000::/64 by host2",
        more: ", according to host1's /status, host1's routes, host1's subnet.env",
      },
    ]);
  });
});
