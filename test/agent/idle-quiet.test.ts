// An idle node's TUN devices get nothing from the kernel: real dual-stack wasm-vxlan agents (weft.1
// and weft-v6.1, IPv6 underlay) with a pod each and no traffic. From the start on, and over a few
// seconds of idling, the kernel sends neither device a packet (no router solicitations, no MLD
// reports, nothing of the family that is off), so every dataplane's counters stay at 0. Each
// dataplane's memory holds only its own family's route table.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type LabAgent, type LabDataplaneStatus } from "../../src/lab/agents.js";
import { LabCluster, LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { NETWORK } from "./support.js";

const conf = {
  Network: NETWORK,
  EnableIPv6: true,
  IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
  Backend: { Type: "wasm-vxlan", Workers: 1 },
};
const IDLE_MS = 5000;

describe.skipIf(!canUseNetns())("an idle agent's devices stay quiet", () => {
  let lab: LabCluster;
  let agents: LabAgents;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "aq", hosts: 2, ipv6: true });
    agents = await LabAgents.prepare(lab, () => conf);
    agents.startAll();
    await agents.waitAllReady();
    for (const a of agents.agents)
      await agents.waitFor(a, "both families' peers", (s) => s.peers.length === 1 && s.peers6?.length === 1);
    await agents.addPods(1);
  }, 120_000);

  afterAll(async () => {
    await agents?.stopAll();
    await lab?.destroy();
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
    for (const a of agents.agents) {
      const s = await agents.status(a);
      expect(await kernelSent(a, "weft.1"), `${a.host.name} weft.1`).toBe(0);
      expect(await kernelSent(a, "weft-v6.1"), `${a.host.name} weft-v6.1`).toBe(0);
      expect(nonZero(s.dataplane), `${a.host.name} IPv4 dataplane`).toEqual({});
      expect(nonZero(s.dataplane6), `${a.host.name} IPv6 dataplane`).toEqual({});
      // Each dataplane holds the route table of its own family only: IPv4's 64 MiB tbl24 is not in IPv6's.
      expect(s.dataplane!.memoryBytes).toBeGreaterThan(64 << 20);
      expect(s.dataplane6!.memoryBytes).toBeLessThan(32 << 20);
    }
  }, 60_000);
});
