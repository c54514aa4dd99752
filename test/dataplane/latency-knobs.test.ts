// The dataplane's latency knobs end to end — busy polling after traffic (busyPollUs) and the CoDel
// sojourn limit on the sockets' receive queues (queueDelayUs) — each on and off, with offloads on
// and off: pings and exact, hashed TCP transfers both ways. Their speed is for the benchmarks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserspaceDataplane, type UserspaceDataplaneOptions } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;
const subnetOf = (i: number) => ({ addr: 0xc6130000 + i * 256, len: 24 });
const macOf = (i: number) => Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, i, 0]);

const MODES: Array<{ name: string; knobs: Partial<UserspaceDataplaneOptions> }> = [
  { name: "busy poll on, queue limit on", knobs: { busyPollUs: 200, queueDelayUs: 5000 } },
  { name: "busy poll off, queue limit off", knobs: { busyPollUs: 0, queueDelayUs: 0 } },
  {
    name: "busy poll on, queue limit on, offloads off",
    knobs: { busyPollUs: 200, queueDelayUs: 5000, offloads: false },
  },
];

for (const [m, mode] of MODES.entries()) {
  describe.skipIf(!canUseNetns())(`userspace dataplane, ${mode.name}`, () => {
    let lab: LabCluster;
    const dps: UserspaceDataplane[] = [];

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: `knob${m}`, hosts: 2 });
      for (const [k, h] of lab.hosts.entries()) {
        await lab.addPods(h, subnetOf(k + 1), 1, 1450);
        const dp = withNetns(
          h.ns.name,
          () =>
            new UserspaceDataplane({
              format: "vxlan",
              tunName: "weft0",
              mtu: 1450,
              network: LAB_POD_NETWORK,
              subnet: subnetOf(k + 1),
              listenAddr: h.underlayAddr,
              port: 8472,
              vni: 1,
              vtepMac: macOf(k + 1),
              workers: 2,
              ...mode.knobs,
            }),
        );
        dps.push(dp);
        await dp.start(h.ns.kernel);
      }
      for (const [k, dp] of dps.entries()) {
        const peer = lab.hosts[1 - k];
        dp.setPeer({
          name: peer.name,
          subnet: subnetOf(2 - k),
          underlay: peer.underlayAddr,
          port: 8472,
          vtepMac: macOf(2 - k),
        });
      }
    });

    afterAll(async () => {
      await Promise.allSettled(dps.map((dp) => dp.stop()));
      await lab?.destroy();
    });

    it("answers pings and carries 30 MB of TCP exactly both ways (SHA-256)", async () => {
      const [p1] = lab.hosts[0].pods;
      const [p2] = lab.hosts[1].pods;
      // The first packet of a fresh path can meet neighbour resolution and a cold worker: warm up.
      for (let t = 0; t < 10 && (await ping(p1, p2.addr, { count: 1, timeoutS: 1 })).received === 0; t++)
        await new Promise((r) => setTimeout(r, 200));
      expect((await ping(p1, p2.addr, { count: 5, intervalS: 0.05 })).received).toBe(5);
      for (const [from, to] of [
        [p1, p2],
        [p2, p1],
      ]) {
        const { sent, received } = await tcpTransfer(from, to, 30 * MB);
        expect(received).toEqual(sent);
        expect(sent.bytes).toBe(30 * MB);
      }
      expect(dps[0].counters().offload.enabled).toBe(mode.knobs.offloads !== false);
    });
  });
}
