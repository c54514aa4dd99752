// A node that loses its name after starting (GOSSIP_NAME_CONFLICT: two nodes of one name both got
// past their joins, and the members then vote one out), with real agents in lab namespaces. With
// --keep-on-exit (the shipped DaemonSet sets it) the loser kept subnet.env and its devices: the
// CNI plugin went on handing out addresses of a subnet the ring holds for the winner, and a
// restart kept the file, as it names the lease the loser's state dir holds. The loser now stops
// as without --keep-on-exit (still no leave), and a restart writes no subnet.env.
import { writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { netConf, overlayDevices } from "./support.js";

describe.skipIf(!canUseNetns())("agent: a name lost after starting", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a1: LabAgent;
  let a2: LabAgent;
  let a3: LabAgent;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "anl", hosts: 3 });
    // Join lists and seeds are given per agent below.
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"), 0);
    [a1, a2, a3] = agents.agents;
  });

  afterAll(async () => {
    await agents?.stopAll();
    await lab?.destroy();
  });

  /** Two nodes named host2 (on host2 and host3), each alone, each the only seed: both lease. */
  const AS_HOST2 = ["--node-name", "host2", "--subnet-seeds", "host2", "--keep-on-exit"];

  it("the loser removes subnet.env and its devices despite --keep-on-exit, and a restart writes none", async () => {
    agents.start(a2, AS_HOST2, []);
    agents.start(a3, AS_HOST2, []);
    await agents.waitReady(a2);
    await agents.waitReady(a3);
    const envs = new Map<LabAgent, string>();
    for (const a of [a2, a3]) {
      envs.set(a, (await agents.subnetEnv(a)).text);
      expect(envs.get(a), a.host.name).toMatch(/FLANNEL_SUBNET=/);
      expect(await overlayDevices(a.host), a.host.name).toEqual(["flannel.1"]);
    }
    // host1 joins both: its members meet the two, who learn of each other; the members vote.
    agents.start(a1, ["--subnet-seeds", "host2"], [a2, a3]);
    // The first of the two to exit (the other's wait fails after 120 s, once the race is decided).
    const loser = await Promise.race(
      [a2, a3].map(async (a) => {
        await agents.exited(a, 120_000);
        return a;
      }),
    );
    const winner = loser === a2 ? a3 : a2;
    expect(loser.process?.exitCode).toBe(1);
    expect(await agents.logTail(loser, 200)).toMatch(/GOSSIP_NAME_CONFLICT/);
    await expect(agents.subnetEnv(loser)).rejects.toThrow(/ENOENT/);
    expect(await overlayDevices(loser.host)).toEqual([]);
    // The winner runs on with its subnet.env.
    expect(winner.process?.exitCode).toBeNull();
    expect((await agents.subnetEnv(winner)).text).toMatch(/FLANNEL_SUBNET=/);

    // Restarted with the subnet.env an agent before this kept (it names the lease the loser's
    // state dir holds, so the start keeps it at first), joining host1, which knows the winner
    // under the name: refused, and the file goes.
    await writeFile(agents.subnetFile(loser), envs.get(loser)!);
    agents.start(loser, [...AS_HOST2], [a1]);
    expect(await agents.exited(loser, 60_000)).toBe(1);
    expect(await agents.logTail(loser, 200)).toMatch(/GOSSIP_NAME_CONFLICT/);
    await expect(agents.subnetEnv(loser)).rejects.toThrow(/ENOENT/);
    expect(await overlayDevices(loser.host)).toEqual([]);
  }, 300_000);
});
