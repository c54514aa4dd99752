// A dual-stack node whose IPv6 subnet the ring gives to another node restarts only its IPv6
// backend instance: its IPv4 subnet, device and pod traffic stay as they were. The loss is made
// the way a restored state dir makes it: host1 is killed, its saved IPv6 ring is edited to say
// host1 took host2's IPv6 subnet (one version later, as a transfer would), and host1 is started
// again; host2 merges the newer version and loses that subnet (LEASE_LOST).
// A node that lost both subnets, with no IPv4 one free, handles the IPv6 loss (and reconciles,
// and reloads) while it waits for IPv4: before, all of it queued behind that wait.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { STATE_FILE, STATE_FILE_IPV6 } from "../../src/control/lease/store.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { ping, pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv6, formatPrefix6, parsePrefix6, prefixContains6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, eventually, restartGivingSubnet, NETWORK } from "./support.js";

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
    expect(await coded(a2.dir, since, "AGENT_SUBNET_")).toEqual([
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

describe.skipIf(!canUseNetns())("agents, dual-stack: both subnets lost, no IPv4 one free", () => {
  // Three IPv4 subnets to lease (flannel skips the first of the four): one per host.
  const env = agentLab({
    tag: "alb",
    hosts: 3,
    ipv6: true,
    conf: () => ({ Network: "198.19.0.0/22", EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "vxlan" } }),
    flags: () => ["--reconcile-interval", "1"],
    settled: {
      what: "both families' peers",
      check: (s) => s.ready && s.peers.length === 2 && s.peers6?.length === 2,
    },
  });

  it("while IPv4 waits for a subnet, the IPv6 loss stops the IPv6 backend and starts it on a new subnet; reconcile and SIGHUP still run", async () => {
    const [a1, a2, a3] = env.all;
    const before = await env.agents.status(a2);
    const [lost4, lost6] = [before.subnet!, before.subnet6!];
    // host3 crashes (its subnets stay reserved for the grace period); host1's restored IPv4 ring
    // says host3 took host2's IPv4 subnet, so none is free anywhere.
    await env.agents.stop(a3, "SIGKILL");
    const since = await env.agents.logSize(a2);
    await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a3.host.name, true);
    await env.agents.waitFor(a2, "waiting for a new IPv4 subnet", (s) => !s.ready && s.subnet === undefined, 60_000);
    // Then host1's restored IPv6 ring says host1 took host2's IPv6 subnet.
    await restartGivingSubnet(env.agents, a1, STATE_FILE_IPV6, a2.host.name, a1.host.name, false);
    const after = await env.agents.waitFor(
      a2,
      "a new IPv6 subnet with its backend running, IPv4 still waiting",
      (s) => s.subnet === undefined && s.subnet6 !== undefined && s.subnet6 !== lost6 && s.backend6 !== undefined,
      30_000,
    );
    expect(after.ready).toBe(false);
    expect((await coded(a2.dir, since, "AGENT_SUBNET_")).map((r) => [r.code, r.subnet])).toEqual([
      ["AGENT_SUBNET_LOST", lost4],
      ["AGENT_SUBNET_LOST", lost6],
    ]);
    // The lease layer's reason is on /readyz, beside the agent's.
    const why = (after as { waitingFor?: string }).waitingFor;
    expect(why).toMatch(/^a new IPv4 subnet: the cluster gave .* \(waiting for a subnet lease: IPv4: .+\)$/);
    await expect(agentRequest(a2.stateDir, "GET", "/readyz")).rejects.toThrow(/waiting for a subnet lease: IPv4: /);
    const links = await a2.host.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]);
    expect(links.map((l) => l.ifname)).toContain("flannel-v6.1");
    expect(links.map((l) => l.ifname)).not.toContain("flannel.1");
    // No subnet.env while a family has no subnet: the CNI plugin hands out nothing.
    await expect(readFile(env.agents.subnetFile(a2), "utf8")).rejects.toMatchObject({ code: "ENOENT" });

    // The periodic reconcile runs meanwhile: a deleted IPv6 peer route comes back.
    const peer = after.peers6!.find((p) => p.name === a1.host.name)!.subnet;
    const routes6 = async () => a2.host.ns.exec(["ip", "-6", "route", "show", "dev", "flannel-v6.1"]);
    await eventually("host1's IPv6 route", routes6, (r) => r.includes(peer), 10_000);
    await a2.host.ns.ip(`-6 route del ${peer} dev flannel-v6.1`);
    expect(await routes6()).not.toContain(peer);
    await eventually("the deleted IPv6 route back", routes6, (r) => r.includes(peer), 10_000);
    // So does a SIGHUP's reload.
    const hup = await env.agents.logSize(a2);
    a2.process!.kill("SIGHUP");
    await eventually(
      "the reload",
      async () => (await readFile(join(a2.dir, "agent.log"))).subarray(hup).toString("utf8"),
      (log) => log.includes("reloaded: the backend in force is the same"),
      10_000,
    );

    await env.agents.stop(a2, "SIGTERM");
    expect(await env.agents.exited(a2)).toBe(0);
  });
});
