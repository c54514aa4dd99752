// Pods made through weft cni and the reference plugins, from the subnet.env real agents write,
// reach each other across hosts on every backend, with the backend's MTU.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { netConf, POD_MTU, type BackendName } from "../agent/support.js";
import { canUseNetns } from "../support/netns.js";

for (const backend of ["vxlan", "host-gw", "wasm-vxlan", "udp"] as const satisfies readonly BackendName[]) {
  describe.skipIf(!canUseNetns())(`CNI pods on ${backend}`, () => {
    let lab: LabCluster;
    let agents: LabAgents;

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: `cnib-${backend.slice(0, 2)}`, hosts: 2 });
      agents = await LabAgents.prepare(lab, () => netConf(backend));
      agents.startAll();
      await agents.waitAllReady();
      await agents.addPods(1);
    }, 120_000);
    afterAll(async () => {
      await agents?.stopAll();
      await lab?.destroy();
    });

    it("each pod has an address of its host's leased subnet and the backend's MTU; pods on different hosts ping each other", async () => {
      for (const a of agents.agents) {
        const env = await agents.subnetEnv(a);
        const [pod] = a.host.pods;
        const subnet = env.v4!.subnet;
        expect(pod.addr >>> (32 - subnet.len)).toBe(subnet.addr >>> (32 - subnet.len));
        expect((await pod.ns.kernel.ipJson<Array<{ mtu: number }>>(["link", "show", "dev", "eth0"]))[0].mtu).toBe(
          POD_MTU[backend],
        );
      }
      const [p1, p2] = lab.hosts.map((h) => h.pods[0]);
      // The peer's route follows its record by up to one programming round.
      for (let t = 0; t < 20 && (await ping(p1, p2.addr, { count: 1, timeoutS: 1 })).received === 0; t++);
      expect((await ping(p1, p2.addr, { count: 3 })).received).toBe(3);
      expect((await ping(p2, p1.addr, { count: 3 })).received).toBe(3);
    });
  });
}
