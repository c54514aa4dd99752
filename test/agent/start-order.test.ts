// Cluster formation in any start order, with real agents in lab namespaces: every order of three
// seeds started a few seconds apart, all three together (in the 5-agent safety test), and join
// targets that start last. A node whose join targets are not up retries (it is not ready
// meanwhile, so a seed never serves alone); once they are, everyone converges. Fresh state dirs
// for every run.
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { eventually, netConf, podRoutes } from "./support.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

describe.skipIf(!canUseNetns())("agent: cluster formation in any start order", () => {
  let lab: LabCluster;
  let agents: LabAgents | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "ord", hosts: 3 });
  });

  // After every test, passed or failed: agents left running would disturb the next order's.
  afterEach(async () => {
    await agents?.stopAll();
    agents = undefined;
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  /** Everyone ready with three distinct subnets, both others as peers and routes to them; no error logged. */
  async function formed(all: LabAgent[]): Promise<void> {
    await Promise.all(all.map((a) => agents!.waitReady(a, 120_000)));
    const subnets = new Map<string, string>();
    for (const a of all) subnets.set(a.host.name, (await agents!.status(a)).subnet!);
    expect(new Set(subnets.values()).size).toBe(3);
    for (const a of all) {
      await agents!.waitFor(
        a,
        "both peers",
        (s) => s.peers.length === 2 && s.peers.every((p) => p.subnet === subnets.get(p.name)),
        60_000,
      );
      const want = all
        .filter((b) => b !== a)
        .map((b) => subnets.get(b.host.name)!)
        .sort();
      await eventually(
        `${a.host.name}'s routes to both peers`,
        async () => (await podRoutes(a.host)).map((r) => r.split(" ")[0]).sort(),
        (r) => JSON.stringify(r) === JSON.stringify(want),
        30_000,
      );
      // A node with an empty join list (the first one) and no saved members stays "standalone"
      // while others join it (it joins nobody itself).
      await agents!.waitFor(
        a,
        "joined",
        (s) => s.join.state === "joined" || (s.join.state === "standalone" && s.join.targets.length === 0),
        10_000,
      );
      expect(await agents!.errorLines(a), a.host.name).toEqual([]);
    }
  }

  it.each(permutations([0, 1, 2]).map((p) => [p.map((i) => `host${i + 1}`).join(" → "), p] as const))(
    "started %s, 3 s apart",
    async (_name, order) => {
      agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
      const all = agents.agents;
      for (const i of order) {
        agents.start(all[i]);
        await sleep(3000);
      }
      await formed(all);
    },
    240_000,
  );

  it("join targets started last: the others retry, are not ready meanwhile, and join when it comes", async () => {
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
    const [target, a2, a3] = agents.agents;
    // flannel's subnet.env, left by the DaemonSet weft replaces: the CNI plugin must not hand out
    // its addresses while host2 waits (they may be another node's by now).
    const flannels =
      "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.77.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
    await writeFile(agents.subnetFile(a2), flannels);
    // host2 and host3 know only host1, which is not up yet; all three are subnet seeds.
    agents.start(a2, [], [target]);
    agents.start(a3, [], [target]);
    const waiting = await agents.waitFor(a2, "join retried twice", (s) => s.join.failedRounds >= 2, 60_000);
    expect(waiting.join.state).toBe("joining");
    expect(waiting.ready).toBe(false);
    await expect(agentRequest(a2.dir, "GET", "/readyz")).rejects.toThrow(/503/);
    expect(await agents.logTail(a2, 50)).toMatch(/GOSSIP_JOIN_RETRY/);
    expect(existsSync(agents.subnetFile(a2))).toBe(false);
    expect(await agents.logTail(a2, 50)).toMatch(/AGENT_STALE_SUBNET_ENV/);
    agents.start(target);
    await formed(agents.agents);
  }, 240_000);

  it("a first node with an empty join list, restarted with a leave (systemctl restart), gets back to the nodes that joined through it", async () => {
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
    const [seed, a2, a3] = agents.agents;
    agents.start(seed, [], []);
    agents.start(a2, [], [seed]);
    agents.start(a3, [], [seed]);
    await formed(agents.agents);
    // SIGTERM leaves: the others hold the seed as left and, having each other, never rejoin.
    await agents.stop(seed);
    for (const a of [a2, a3])
      await agents.waitFor(a, "the seed left", (s) =>
        s.members.some((m) => m.name === seed.host.name && m.state === "left"),
      );
    // Still an empty join list: only the members it saved at its last run lead it back.
    agents.start(seed, [], []);
    await formed(agents.agents);
  }, 240_000);
});
