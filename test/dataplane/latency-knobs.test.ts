// The dataplane's latency knobs end to end — busy polling after traffic (busyPollUs), the CoDel
// sojourn limit on the sockets' receive queues (queueDelayUs), the send path's flow queue
// (flowQueue, on by default, so on in every mode that does not turn it off) and the TUN device's
// steering program (tunSteering, on by default) — each on and off, with offloads on and off: pings
// and exact, hashed TCP transfers both ways. Their speed is for the benchmarks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane, UserspaceDataplaneOptions } from "../../src/dataplane/dataplane.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { dataplanePair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;

// tunRing: the TUN device's txqueuelen in force (dataplane.ts: long for the flow queue, on by
// default, which reads ahead from it and drops a flood's excess itself; short with offloads
// without it, so a ping waits behind few packets; one packet an entry without offloads).
const MODES: Array<{ name: string; knobs: Partial<UserspaceDataplaneOptions>; tunRing: number }> = [
  { name: "busy poll on, queue limit on", knobs: { busyPollUs: 200, queueDelayUs: 5000 }, tunRing: 1024 },
  { name: "busy poll off, queue limit off", knobs: { busyPollUs: 0, queueDelayUs: 0 }, tunRing: 1024 },
  {
    name: "busy poll on, queue limit on, offloads off",
    knobs: { busyPollUs: 200, queueDelayUs: 5000, offloads: false },
    tunRing: 5000,
  },
  { name: "flow queue off", knobs: { flowQueue: false }, tunRing: 32 },
  { name: "flow queue off, offloads off", knobs: { flowQueue: false, offloads: false }, tunRing: 5000 },
  { name: "TUN steering program off", knobs: { tunSteering: false }, tunRing: 1024 },
  { name: "TUN steering program off, offloads off", knobs: { tunSteering: false, offloads: false }, tunRing: 5000 },
];

for (const [m, mode] of MODES.entries()) {
  describe.skipIf(!canUseNetns())(`userspace dataplane, ${mode.name}`, () => {
    let lab: LabCluster;
    let dps: UserspaceDataplane[] = [];

    beforeAll(async () => {
      ({ lab, dps } = await dataplanePair(`knob${m}`, { extra: mode.knobs }));
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
      expect(dps[0].counters().tunSteering).toEqual(
        mode.knobs.tunSteering === false
          ? { by: "flow-table", reason: "disabled by the tunSteering option" }
          : { by: "program" },
      );
      for (const h of lab.hosts) {
        const [link] = JSON.parse(await h.ns.exec(["ip", "-json", "link", "show", "dev", "weft0"]));
        expect(link.txqlen).toBe(mode.tunRing);
      }
    });
  });
}
