// The send path's flow queue (assembly/packet/flow-queue.ts, worker.ts) on a real dataplane: a
// UDP flood that outruns a low-priority worker on the sending host, beside a sparse ping: the
// flood's excess is dropped by the flow queue and counted, the ping gets through. Exact transfers
// with it on and off are in latency-knobs.test.ts; how long the ping waited is for the benchmarks
// (bench:e2e --flow-queue on,off).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { iperf, ping } from "../../src/lab/traffic.js";
import { kernelPeerPair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("userspace dataplane flow queue under a flood", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    // The weft host sends: one worker at a low priority, so that the flood outruns it also where
    // cores are many; the receiver is the kernel's vxlan, which keeps up. One queue pair, so that
    // the flood's four streams and the ping share one TUN ring: with a ring per stream (queue
    // pairs) each stream's excess is dropped at its own ring, and a stream read from a ring of its
    // own reaches the flow queue as a sparse flow, sent at once.
    ({ lab, dp } = await kernelPeerPair("fqflood", { workers: 1, queuesPerWorker: 1, nice: 10, flowQueue: true }));
  });

  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("drops the flood's excess in the flow queue, counted, while a sparse ping gets through", async () => {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    // The first packet of a fresh path can meet neighbour resolution and a cold worker.
    for (let t = 0; t < 10 && (await ping(weftPod, kernelPod.addr, { count: 1, timeoutS: 1 })).received === 0; t++)
      await new Promise((r) => setTimeout(r, 200));
    const before = dp.counters().io.flowQueueDrops;
    const flood = iperf(kernelPod, weftPod, { seconds: 8, udp: true, length: 1400, bitrate: "0", streams: 4 });
    await new Promise((r) => setTimeout(r, 1000));
    // Many pings across the flood: where the worker gets little CPU (a loaded machine), the TUN
    // ring stays full between its reads and drops most of them before the flow queue sees them
    // (1-4 of 40 got through beside two busy loops; in CI once none of 40, later none of 120 at
    // 50 ms): each ping is a draw of a free slot, so 600 draws at 10 ms.
    const pings = await ping(weftPod, kernelPod.addr, { count: 600, intervalS: 0.01, timeoutS: 2 });
    const f = await flood;
    const dropped = dp.counters().io.flowQueueDrops - before;
    expect(f.packets! - f.lostPackets!).toBeGreaterThan(0);
    expect(dropped).toBeGreaterThan(0n);
    // Dropped packets are among what iperf3 counts as lost.
    expect(dropped).toBeLessThanOrEqual(BigInt(f.lostPackets!));
    expect(pings.received).toBeGreaterThan(0);
  });
});
