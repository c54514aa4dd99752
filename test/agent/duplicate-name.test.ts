// A second node of a taken name, with real agents in lab namespaces (issue 14: duplicate node names
// must never share or waste a subnet). host3 joins host2 while host1 is cut off, so host1 never
// hears of it. A clone named host3 on host4, which reaches both sides, joins host1 (which answers
// and knows no host3), host2 (which knows the real one: the name conflict) and a silent address
// that holds its join round for a few seconds. Before, its lease layer ran from the start: it asked
// host1 for slots during the round, and host1 gave the name host3 half of its free ones.
import { describe, expect, it } from "vitest";
import { LAB_GOSSIP_PORT, LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { SwitchFaults } from "../../src/lab/chaos/faults.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { coded, netConf } from "./support.js";

/** No host of the lab has it: a connection to it waits for ARP until the kernel gives up. */
const SILENT = `198.18.0.250:${LAB_GOSSIP_PORT}`;

describe.skipIf(!canUseNetns())("agent: a node of a taken name", () => {
  it("asks for, takes and is given no subnet slot before its join round settles, and exits 1", async () => {
    const lab = await LabCluster.create({ tag: "dup", hosts: 4 });
    const faults = new SwitchFaults(lab);
    let agents: LabAgents | undefined;
    try {
      // host1 and host2 are the cluster (its seeds); host3 and host4 are started with their own flags.
      agents = await LabAgents.prepare(lab, () => netConf("vxlan"), 2);
      const [a1, a2, a3, a4]: LabAgent[] = agents.agents;
      agents.start(a1, [], []);
      agents.start(a2, [], [a1]);
      await Promise.all([a1, a2].map((a) => agents!.waitReady(a)));
      await faults.partition([a1.host], [a2.host, a3.host]);
      agents.start(a3, [], [a2]);
      await agents.waitReady(a3, 120_000);
      const subnet3 = (await agents.status(a3)).subnet;
      expect(subnet3).toBeDefined();
      expect((await agents.status(a1)).members.some((m) => m.name === "host3")).toBe(false);

      agents.start(a4, ["--node-name", "host3", "--join", SILENT], [a1, a2]);
      // Within the bound on a name held by a silent record (34 s on lan) plus the rounds' timeouts,
      // should host3's answer to the name check be lost under load.
      expect(await agents.exited(a4, 90_000)).toBe(1);
      expect(await agents.logTail(a4, 200)).toMatch(/^weft: \[GOSSIP_NAME_CONFLICT\] /m);
      expect((await coded(a4.dir, 0, "LEASE_")).map((r) => r.code)).not.toContain("LEASE_ACQUIRED");
      // host1 heard of the clone (its record came with the push-pull) but gave it nothing.
      const seen = (await agents.status(a1)).members.find((m) => m.name === "host3");
      expect(seen?.addr).toBe(agents.gossipAddr(a4));
      expect((await coded(a1.dir, 0, "LEASE_GAVE")).map((r) => r.to)).not.toContain("host3");
      expect((await agents.status(a3)).subnet).toBe(subnet3);
    } finally {
      await faults.clear();
      await agents?.stopAll();
      await lab.destroy();
    }
  }, 240_000);
});
