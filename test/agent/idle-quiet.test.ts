// An idle node's TUN devices get nothing from the kernel: real dual-stack wasm-vxlan agents (weft.1
// and weft-v6.1, IPv6 underlay) with a pod each and no traffic. From the start on, and over a few
// seconds of idling, the kernel sends neither device a packet (no router solicitations, no MLD
// reports, nothing of the family that is off), so every dataplane's counters stay at 0. Each
// dataplane's memory holds only its own family's route table, as /metrics shows (with the build
// the agent runs, weft_build_info, as /status shows it). When something
// else rewrites net.ipv6.conf.all.* (kube-proxy writes all.forwarding), which resets every
// device's own setting, reconcile writes the devices' sysctls back and the kernel falls quiet again.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import type { LabAgent, LabDataplaneStatus } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { projectFile } from "../../src/paths.js";
import { headLabel } from "../support/checkout.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, NETWORK } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6);
const conf = {
  Network: NETWORK,
  EnableIPv6: true,
  IPv6Network: NETWORK6,
  Backend: { Type: "wasm-vxlan", Workers: 1 },
};
const IDLE_MS = 5000;

describe.skipIf(!canUseNetns())("an idle agent's devices stay quiet", () => {
  const env = agentLab({
    tag: "aq",
    hosts: 2,
    ipv6: true,
    conf: () => conf,
    settled: { what: "both families' peers", check: (s) => s.peers.length === 1 && s.peers6?.length === 1 },
  });

  /** Packets the kernel sent into a device (its TX counter), as `ip -s link` reads it. */
  const kernelSent = async (a: LabAgent, dev: string) => {
    const [link] = JSON.parse(await a.host.ns.ip(`-json -s link show dev ${dev}`)) as Array<{
      stats64: { tx: { packets: number } };
    }>;
    return link.stats64.tx.packets;
  };
  /** A dataplane's counters that are not 0, by direction and reason (drops, and anything forwarded). */
  const nonZero = (d: LabDataplaneStatus | undefined) =>
    Object.fromEntries(
      (["tx", "rx"] as const).flatMap((dir) =>
        Object.entries(d![dir].packets)
          .filter(([, n]) => n !== 0)
          .map(([reason, n]) => [`${dir}.${reason}`, n]),
      ),
    );

  it(`the kernel sends nothing into weft.1 or weft-v6.1, from the start and over ${IDLE_MS / 1000} s; every dataplane counter stays 0`, async () => {
    await new Promise((r) => setTimeout(r, IDLE_MS));
    for (const a of env.all) {
      const s = await env.agents.status(a);
      expect(await kernelSent(a, "weft.1"), `${a.host.name} weft.1`).toBe(0);
      expect(await kernelSent(a, "weft-v6.1"), `${a.host.name} weft-v6.1`).toBe(0);
      expect(nonZero(s.dataplane), `${a.host.name} IPv4 dataplane`).toEqual({});
      expect(nonZero(s.dataplane6), `${a.host.name} IPv6 dataplane`).toEqual({});
      // Each dataplane holds the route table of its own family only: IPv4's 64 MiB tbl24 is not in IPv6's.
      expect(s.dataplane!.memoryBytes).toBeGreaterThan(64 << 20);
      expect(s.dataplane6!.memoryBytes).toBeLessThan(32 << 20);
    }
  }, 60_000);

  it("/metrics exports each family's dataplane memory as weft_dataplane_memory_bytes, the size /status shows, and weft_build_info, the version and commit /status shows", async () => {
    for (const a of env.all) {
      const s = await env.agents.status(a);
      const text = String(await agentRequest(a.stateDir, "GET", "/metrics"));
      expect(text).toMatch(/^# TYPE weft_dataplane_memory_bytes gauge$/m);
      for (const [family, d] of [
        ["4", s.dataplane],
        ["6", s.dataplane6],
      ] as const) {
        const m = new RegExp(
          `^weft_dataplane_memory_bytes\\{backend="wasm-vxlan",family="${family}"\\} (\\d+)$`,
          "m",
        ).exec(text);
        expect(Number(m?.[1]), `${a.host.name} family ${family}`).toBe(d!.memoryBytes);
      }
      // Which build runs, as `weft status` says it: the version every build shares, and the commit
      // of this checkout the tests' build was made from (before, nothing told two builds apart).
      expect(s.version).toBe(JSON.parse(readFileSync(projectFile("package.json"), "utf8")).version);
      expect(s.commit).toMatch(headLabel());
      expect(text).toMatch(/^# TYPE weft_build_info gauge$/m);
      expect(text).toContain(`\nweft_build_info{version="${s.version}",commit="${s.commit}"} 1\n`);
    }
  });

  /** The TUN devices' sysctls the backend sets, as the kernel shows them now. */
  const DEVICE_SYSCTLS = {
    "net/ipv6/conf/weft.1/disable_ipv6": "1",
    "net/ipv6/conf/weft-v6.1/addr_gen_mode": "1",
    "net/ipv6/conf/weft-v6.1/force_mld_version": "1",
    "net/ipv6/conf/weft-v6.1/forwarding": "0",
    "net/ipv6/conf/weft-v6.1/accept_ra": "0",
  };
  const deviceSysctls = async (a: LabAgent) => {
    const keys = Object.keys(DEVICE_SYSCTLS);
    const values = await a.host.ns.kernel.readSysctls(keys);
    return Object.fromEntries(keys.map((k, i) => [k, values[i]]));
  };

  it("a rewrite of net.ipv6.conf.all.forwarding (as kube-proxy makes) or all.disable_ipv6 resets every device's own; reconcile writes the devices' sysctls back and the kernel falls quiet again", async () => {
    const [a, b] = env.all;
    for (const x of [a, b]) expect(await deviceSysctls(x)).toEqual(DEVICE_SYSCTLS);
    const repairsBefore = await Promise.all(
      [a, b].map(async (x) => (await env.agents.status(x)).backendCounters!.driftRepairs),
    );
    // The lab's hosts forward IPv6 already: writing the same value still resets every device's.
    await a.host.ns.kernel.sysctl("net.ipv6.conf.all.forwarding", 1);
    await b.host.ns.kernel.sysctl("net.ipv6.conf.all.disable_ipv6", 0);
    // Reconcile runs every 5 s (the default): a generous bound, no timing asserted. (Not read in
    // between: reconcile may already have repaired it; the repair counts below say it did.)
    for (const x of [a, b])
      await expect.poll(() => deviceSysctls(x), { timeout: 30_000, interval: 500 }).toEqual(DEVICE_SYSCTLS);
    for (const [i, x] of [a, b].entries())
      expect(
        (await env.agents.status(x)).backendCounters!.driftRepairs,
        `${x.host.name} drift repairs`,
      ).toBeGreaterThan(repairsBefore[i]);
    // What the kernel sent while a device was reset (MLD reports for the all-routers groups, and
    // the leaves once forwarding is off again) stops: nothing more over a further reconcile round.
    const sent = async () =>
      Promise.all([a, b].flatMap((x) => ["weft.1", "weft-v6.1"].map((dev) => kernelSent(x, dev))));
    const counters = async () =>
      Promise.all([a, b].map(async (x) => (await env.agents.status(x)).backendCounters!.driftRepairs));
    await new Promise((r) => setTimeout(r, 1000)); // what the repair itself made the kernel send reaches the dataplane
    const [sentBefore, quietBefore] = [await sent(), await Promise.all([a, b].map(async (x) => env.agents.status(x)))];
    const repairs = await counters();
    await new Promise((r) => setTimeout(r, 6000));
    expect(await sent()).toEqual(sentBefore);
    expect(await counters(), "no further repairs").toEqual(repairs);
    for (const [i, x] of [a, b].entries()) {
      const s = await env.agents.status(x);
      expect(s.dataplane!.tx.packets, `${x.host.name} IPv4 dataplane`).toEqual(quietBefore[i].dataplane!.tx.packets);
      expect(s.dataplane6!.tx.packets, `${x.host.name} IPv6 dataplane`).toEqual(quietBefore[i].dataplane6!.tx.packets);
    }
    // The host that kept its all.forwarding never sent into weft-v6.1, nor anything into weft.1 while IPv6 stayed off on it.
    expect(await kernelSent(a, "weft.1")).toBe(0);
    expect(await kernelSent(b, "weft-v6.1")).toBe(0);
  }, 90_000);

  it("reconcile puts back weft-v6.1's address (and with it the IPv6 network's route) deleted by hand", async () => {
    const [a] = env.all;
    const { subnet6 } = await env.agents.status(a);
    const address = `${subnet6!.split("/")[0]}/49`;
    const show = () => a.host.ns.ip("-6 addr show dev weft-v6.1 scope global");
    expect(await show()).toContain(`inet6 ${address} scope global`);
    await a.host.ns.ip(`-6 addr flush dev weft-v6.1 scope global`);
    // Reconcile runs every 5 s (the default): a generous bound, no timing asserted.
    await expect.poll(show, { timeout: 30_000, interval: 500 }).toContain(`inet6 ${address} scope global`);
    expect(await a.host.ns.ip(`-6 route show ${NETWORK6}`)).toContain(`${NETWORK6} dev weft-v6.1 proto kernel`);
  }, 60_000);
});
