// The send path's flow queue (assembly/packet/flow-queue.ts, worker.ts) on a real dataplane: a
// UDP flood that outruns a low-priority worker on the sending host, beside a sparse ping: the
// flood's excess is dropped by the flow queue and counted, the ping gets through. Exact transfers
// with it on and off are in latency-knobs.test.ts; how long the ping waited is for the benchmarks
// (bench:e2e --flow-queue on,off).
// And a worker killed while its flow queue holds packets (read from the TUN ring, not sent yet):
// the worker that runs its task again sends them at once, each once, though no new packet comes to
// wake it (worker.ts: a backlog found at start). The kill comes once the supervisor's backoff has
// grown to its longest wait (1 s), in which the TUN ring is emptied and closed (txqueuelen 0: the
// kernel frees what it held and drops what comes), so that the backlog alone can wake the new worker.
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import type { QueueTask } from "../../src/dataplane/queue-task.js";
import type { HotPath } from "../../src/hotpath/module.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { iperf, ping } from "../../src/lab/traffic.js";
import { until } from "../io/until.js";
import { kernelPeerPair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

/** Packets the worker's flow queue holds (the dataplane's shared memory, read from here). */
function backlog(dp: UserspaceDataplane): number {
  const inner = dp as unknown as { hp: HotPath; workerTasks: Array<{ task: QueueTask }> };
  return inner.hp.fn.fqBacklog(inner.workerTasks[0].task.flowQueue);
}

/** Every packet the send path has given a verdict (sent, replied to or dropped). */
const handled = (dp: UserspaceDataplane) => Object.values(dp.counters().tx.packets).reduce((n, v) => n + v, 0n);

/** Packets the workers read from the TUN device, as the kernel counts them (its tx_packets). */
async function tunReads(lab: LabCluster): Promise<number> {
  const [link] = await lab.hosts[1].ns.kernel.ipJson<Array<{ stats64: { tx: { packets: number } } }>>([
    "-s",
    "link",
    "show",
    "weft0",
  ]);
  return link.stats64.tx.packets;
}

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

  it("sends what a killed worker held once its task runs again, each packet once", async () => {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    // One stream: a flood of several, each with a packet or two per read, can settle where every
    // flow is emptied by each send and comes back as a new (sparse) one at the next read, so that
    // the worker reads one batch per send and holds nothing (0 at ten kills in a row). One flow
    // with every packet of a read stays on the old list and is read ahead of its sends.
    const flood = iperf(kernelPod, weftPod, { seconds: 15, udp: true, length: 1400, bitrate: "0", streams: 1 });
    await sleep(500);
    // Kills 1..7 make the supervisor's wait before each later restart 1 s (10 ms doubling); each
    // waits for the new worker to read again, so that the next kill fails a running task. A kill
    // that finds the flow queue empty (the worker kept up for a moment) is made again.
    const killRunning = async () => {
      const reads = dp.counters().io.tunBatches;
      const restarts = dp.counters().workerRestarts;
      await until(`the worker to run again after restart ${restarts}`, () =>
        dp.counters().io.tunBatches > reads ? true : undefined,
      );
      await dp.killWorkers();
    };
    for (let k = 1; k <= 7; k++) await killRunning();
    let held = 0;
    for (let tries = 0; tries < 10 && held === 0; tries++) {
      await killRunning();
      held = backlog(dp);
    }
    const before = handled(dp);
    await lab.hosts[1].ns.ip("link set weft0 txqueuelen 0");
    try {
      const read = await tunReads(lab);
      expect(held, "the flood filled the flow queue").toBeGreaterThan(0);
      await until("the backlog to be sent", () => (backlog(dp) === 0 ? true : undefined));
      // Nothing more was read: what was handled since the kill is the backlog, each packet once.
      expect(await tunReads(lab)).toBe(read);
      expect(handled(dp) - before).toBe(BigInt(held));
    } finally {
      // iperf3's control connection crosses the dataplane too.
      await lab.hosts[1].ns.ip("link set weft0 txqueuelen 1024");
      await flood;
    }
    expect((await ping(weftPod, kernelPod.addr, { count: 2, timeoutS: 1 })).received).toBe(2);
  });
});
