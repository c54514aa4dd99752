// The receive queue's sojourn limit (codel.ts) on a real dataplane: a UDP flood that never backs
// off, from a kernel vxlan peer (several iperf3 streams, faster than one low-priority worker
// forwards), shares the worker's socket with a sparse ping. The flood's late datagrams are dropped
// at the head and counted as queue-delay drops; the ping still gets through. How long anything
// waited is for the benchmarks (weft bench's ping under load and flood tail).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { DEFAULT_QUEUE_DELAY_US } from "../../src/dataplane/defaults.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { iperf, ping } from "../../src/lab/traffic.js";
import { kernelPeerPair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("userspace dataplane receive queue under a flood", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  let hog: ChildProcess | undefined;
  // The whole group: killing timeout alone would leave its shell looping.
  const stopHog = () => {
    if (hog?.pid !== undefined && hog.exitCode === null) process.kill(-hog.pid, "SIGKILL");
    hog = undefined;
  };

  beforeAll(async () => {
    // One worker with one queue pair: the flood and the ping share its socket, with the default sojourn limit. Its
    // thread at a low priority and pinned to CPU 0 beside a busy loop during the flood, so the
    // flood outruns it on a quiet machine too (on an idle core a worker kept up, and no queue stood).
    ({ lab, dp } = await kernelPeerPair("qdelay", { workers: 1, queuesPerWorker: 1, nice: 10 }));
  });

  afterAll(async () => {
    stopHog();
    await dp?.stop();
    await lab?.destroy();
  });

  it("drops the flood's late datagrams at the head, counted, while a sparse ping gets through", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    for (let t = 0; t < 10 && (await ping(p1, p2.addr, { count: 1, timeoutS: 1 })).received === 0; t++)
      await new Promise((r) => setTimeout(r, 200));
    const workers = niceThreads(10);
    expect(workers).toHaveLength(1);
    for (const tid of workers) execFileSync("taskset", ["-p", "-c", "0", String(tid)], { stdio: "ignore" });
    // Bounded: the loop ends with the flood (timeout), or at afterAll.
    hog = spawn("taskset", ["-c", "0", "timeout", "6", "sh", "-c", "while :; do :; done"], {
      stdio: "ignore",
      detached: true,
    });
    const before = dp.counters().io.queueDelayDrops;
    const flood = iperf(p2, p1, { seconds: 4, udp: true, length: 1400, bitrate: "0", streams: 4 });
    await new Promise((r) => setTimeout(r, 1000));
    const pings = await ping(p1, p2.addr, { count: 40, intervalS: 0.05, timeoutS: 2 });
    const f = await flood;
    stopHog();
    const dropped = dp.counters().io.queueDelayDrops - before;
    expect(DEFAULT_QUEUE_DELAY_US).toBeGreaterThan(0);
    expect(f.receivedPackets!).toBeGreaterThan(0);
    expect(dropped).toBeGreaterThan(0n);
    // Dropped datagrams are among those sent and never received (not only iperf3's lost count,
    // which ends at the highest sequence number received: a starved worker drops past it).
    const [sent, received] = [Math.round(f.sentBytes / 1400), Math.floor(f.receivedBytes / 1400)];
    expect(dropped).toBeLessThanOrEqual(BigInt(sent - received));
    expect(pings.received).toBeGreaterThan(0);
  });
});

/** This process's threads at the given nice value (the dataplane's worker sets its own). */
function niceThreads(nice: number): number[] {
  return readdirSync("/proc/self/task")
    .map(Number)
    .filter((tid) => {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // Fields after the command's closing parenthesis: state is field 3, nice field 19.
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]) === nice;
    });
}
