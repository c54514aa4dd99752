// A start that ends before the agent runs, with real agents in lab namespaces, where no subnet can
// be leased (the only subnet seed is a node that never comes): SIGTERM once the cluster was
// reached sends a leave (before, the start's undo stopped without one, and peers kept the node
// until gossip declared it dead), and a name conflict found after joining (a rejoin that meets a
// live node of the same name) ends the start with exit 1 (before, it was logged and the start
// went on waiting for a lease, for good where none is free).
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { canUseNetns } from "../support/netns.js";
import { netConf } from "./support.js";

/** No subnet is ever free: the ring waits for its one seed. */
const NO_LEASE = ["--subnet-seeds", "ghost"];

describe.skipIf(!canUseNetns())("agent: a start that ends before the agent runs", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a1: LabAgent;
  let a2: LabAgent;
  /** A second agent on host1 named host2 (the name conflict's). */
  let twin: LabAgent | undefined;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "ase", hosts: 2 });
    // No cluster members: the lab names no seeds, so "ghost" (NO_LEASE) is the only one.
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"), 0);
    [a1, a2] = agents.agents;
  });

  afterAll(async () => {
    if (twin) await agents?.stop(twin);
    await agents?.stopAll();
    await lab?.destroy();
  });

  /** Starts host2 joining host1 and waits until it joined and waits for a lease. */
  const startWaiting = async () => {
    agents.start(a2, NO_LEASE, [a1]);
    await agents.waitFor(
      a2,
      "joined, waiting for a lease",
      (s) =>
        s.join.state === "joined" &&
        /^waiting for a subnet lease/.test((s as { waitingFor?: string }).waitingFor ?? ""),
    );
  };

  it("SIGTERM while waiting for a lease after joining: a leave, so host1 sees host2 left, not dead", async () => {
    agents.start(a1, NO_LEASE, []);
    await startWaiting();
    await agents.stop(a2);
    expect(a2.process?.exitCode).toBe(0);
    const seen = await agents.waitFor(a1, "host2 left or dead", (s) =>
      s.members.some((m) => m.name === "host2" && (m.state === "left" || m.state === "dead")),
    );
    expect(seen.members.find((m) => m.name === "host2")?.state).toBe("left");
  });

  it("a live node of its name met when it joins again: exits 1 with GOSSIP_NAME_CONFLICT instead of waiting for a lease", async () => {
    await startWaiting();
    // host1 gone: host2 has no alive member left and joins again from its join list (host1).
    await agents.stop(a1, "SIGKILL");
    await agents.waitFor(a2, "joining again", (s) => s.join.state === "rejoining");
    // What answers there now is another node named host2, on a state dir of its own.
    const dir = join(a1.dir, "twin");
    await mkdir(dir);
    await writeFile(join(dir, "net-conf.json"), JSON.stringify(netConf("vxlan")));
    twin = { host: a1.host, dir, stateDir: dir };
    agents.start(twin, ["--node-name", "host2", ...NO_LEASE], []);
    expect(await agents.exited(a2, 60_000)).toBe(1);
    const log = await agents.logTail(a2, 200);
    expect(log).toMatch(/^weft: \[GOSSIP_NAME_CONFLICT\] /m);
    expect(log).not.toMatch(/AGENT_STOPPED/);
  }, 120_000);
});
