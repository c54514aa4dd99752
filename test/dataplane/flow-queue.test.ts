// The send path's flow queue (assembly/packet/flow-queue.ts, worker.ts) on a real dataplane: a
// UDP flood that outruns a low-priority worker on the sending host, beside a sparse ping: the
// flood's excess is dropped by the flow queue and counted, the ping gets through. Exact transfers
// with it on and off are in latency-knobs.test.ts; how long the ping waited is for the benchmarks
// (bench:e2e --flow-queue on,off).
// And a worker killed while its flow queue holds packets (read from the TUN ring, not sent yet):
// the worker that runs its task again sends them at once, each once, though no new packet comes to
// wake it (worker.ts: a backlog found at start). Before the supervisor runs the task again, the TUN
// ring is emptied and closed (txqueuelen 0: the kernel frees what it held and drops what comes), so
// that the backlog alone can wake the new worker: by calls that do not yield to the event loop, where
// the supervisor's wait before the restart is a timer (a loaded machine can take longer than any wait).
// Unless the worker died inside a call that changes the queue (cut here by hand, as a trap would):
// then the new worker lays the queue out afresh, and what it held counts as dropped, not sent.
// And what a worker killed mid-stream held outside the queue (read and not queued yet, taken out
// and not sent yet) is counted too: every datagram of a burst is delivered or counted as dropped.
import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import type { QueueTask } from "../../src/dataplane/queue-task.js";
import type { HotPath } from "../../src/hotpath/module.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { iperf, ping, snmpCounter } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { until } from "../io/until.js";
import { kernelPeerPair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

/** The worker's flow queue and task (the dataplane's shared memory, reached from here). */
function flowQueue(dp: UserspaceDataplane) {
  const inner = dp as unknown as { hp: HotPath; workerTasks: Array<{ task: QueueTask }> };
  const { task } = inner.workerTasks[0];
  return { hp: inner.hp, fn: inner.hp.fn, q: task.flowQueue, task };
}

/** Packets the worker's flow queue holds. */
function backlog(dp: UserspaceDataplane): number {
  const { fn, q } = flowQueue(dp);
  return fn.fqBacklog(q);
}

/**
 * Kills the worker while its flow queue holds packets, and nothing outside it (a read not queued
 * yet, packets taken out and not through the hot path yet: fqTakeOver counts those as dropped too),
 * and not inside a call that changes it: as soon as a worker that serves is seen holding some. Not
 * once it has counted a read: it counts them when its rounds end, which, where the flood is slow (a
 * loaded machine), is when it has sent all it held. A kill that finds otherwise (the worker sent
 * what it held, or was amid a read, a send or a call, when the kill landed) is made again, once the
 * supervisor has heard of the death (until then the dead worker still looks as serving). Returns
 * the packets held. The caller runs what must come before the restart without yielding to the
 * event loop (see the top of this file). Fails once `floodEnded` says so: nothing fills the queue
 * after it, and the kills would otherwise go on for minutes.
 */
async function killWhileHolding(dp: UserspaceDataplane, floodEnded: () => boolean): Promise<number> {
  const { hp, fn, q } = flowQueue(dp);
  const words = new Int32Array(hp.memory.buffer, q, (hp.constant("FQ_OUT") >> 2) + 1);
  const outside = () => words[hp.constant("FQ_PREPARED") >> 2] + words[hp.constant("FQ_OUT") >> 2];
  let held = 0;
  for (let kills = 0; kills < 20 && held === 0; kills++) {
    await until(
      `a serving worker to hold packets (kill ${kills})`,
      () => (floodEnded() || (dp.counters().workersDown === 0 && fn.fqBacklog(q) > 0) ? true : undefined),
      30_000,
    );
    if (floodEnded())
      throw new Error(`the flood ended before a kill found the worker holding packets (${kills} kills)`);
    const restarts = dp.counters().workerRestarts;
    await dp.killWorkers();
    held = fn.fqCut(q) || outside() > 0 ? 0 : fn.fqBacklog(q);
    if (held === 0)
      await until("the supervisor to hear of the death", () =>
        dp.counters().workerRestarts > restarts ? true : undefined,
      );
  }
  return held;
}

/** Every packet the send path has given a verdict (sent, replied to or dropped). */
const handled = (dp: UserspaceDataplane) => Object.values(dp.counters().tx.packets).reduce((n, v) => n + v, 0n);

/** `ip` in the weft host's namespace, synchronous: no timer (the supervisor's restart) runs meanwhile. */
const weftHostIp = (lab: LabCluster, args: string[]) =>
  execFileSync("ip", ["-n", lab.hosts[1].ns.name, ...args], { encoding: "utf8" });

/** Packets the workers read from the TUN device, as the kernel counts them (its tx_packets). */
function tunReads(lab: LabCluster): number {
  const [link] = JSON.parse(weftHostIp(lab, ["-s", "-json", "link", "show", "weft0"])) as Array<{
    stats64: { tx: { packets: number } };
  }>;
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
    // As the backend does: else the kernel's own router solicitations share the ring, and one
    // dropped there during a burst is a drop no datagram of the burst accounts for.
    await lab.hosts[1].ns.kernel.sysctl("net/ipv6/conf/weft0/disable_ipv6", 1);
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
    expect(f.receivedPackets!).toBeGreaterThan(0);
    expect(dropped).toBeGreaterThan(0n);
    // Dropped packets are among those sent and never received.
    expect(dropped).toBeLessThanOrEqual(BigInt(f.packets! - f.receivedPackets!));
    expect(pings.received).toBeGreaterThan(0);
  });

  it("accounts for every datagram of a burst through a worker killed mid-stream: sent = delivered + counted drops", async () => {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    const BURST = 250_000;
    // Datagrams to a port nobody listens on: the kernel pod's stack counts each one that arrives
    // (NoPorts), whatever the rate, so a slow receiving application cannot lose any uncounted.
    // The pings that make the worker read (settled) are counted the same way: echoes sent, and
    // echoes arrived, since one sent while the ring is still full is dropped like a datagram.
    const arrived = async () =>
      (await snmpCounter(kernelPod.ns, "Udp", "NoPorts")) +
      (await snmpCounter(kernelPod.ns, "Udp", "InDatagrams")) +
      (await snmpCounter(kernelPod.ns, "Icmp", "InEchos"));
    const sent = async () =>
      (await snmpCounter(weftPod.ns, "Udp", "OutDatagrams")) + (await snmpCounter(weftPod.ns, "Icmp", "OutEchos"));
    const counted = () => {
      const c = dp.counters();
      const verdictDrops = Object.entries(c.tx.packets).reduce((n, [v, k]) => (v === "FORWARD" ? n : n + k), 0n);
      return c.tunRingDrops! + c.io.flowQueueDrops + c.io.sendShortfall + c.io.sendErrors + verdictDrops;
    };
    // Nothing in flight: the worker runs (it has read since the last kill, so the TUN ring is
    // drained), its flow queue is empty and the counters stand still for a quarter of a second.
    const settled = async () => {
      const reads = dp.counters().io.tunBatches;
      // A ping (ICMP: no UDP counter moves) gives the worker a read even when the burst's last
      // datagrams came before the last kill's restart, and nothing else would come.
      await ping(weftPod, kernelPod.addr, { count: 1, timeoutS: 2 });
      await until("the worker to run", () => (dp.counters().io.tunBatches > reads ? true : undefined), 5000);
      let last = "";
      for (let tries = 0; tries < 40; tries++) {
        const now = `${backlog(dp)} ${await arrived()} ${tunReads(lab)} ${counted()}`;
        if (now === last && backlog(dp) === 0) return;
        last = now;
        await sleep(250);
      }
      throw new Error(`the path did not settle: backlog, arrived, TUN reads, drops ${last}`);
    };
    expect((await ping(weftPod, kernelPod.addr, { count: 1, timeoutS: 2 })).received).toBe(1);
    await settled();
    const before = {
      sent: await sent(),
      arrived: await arrived(),
      counted: counted(),
      restarts: dp.counters().workerRestarts,
    };
    const burst = `const s=require("node:dgram").createSocket("udp4");const b=Buffer.alloc(1400);let n=0,open=0;
      const pump=()=>{while(n<${BURST}&&open<256){n++;open++;s.send(b,9,"${formatIpv4(kernelPod.addr)}",()=>{open--;if(n<${BURST})pump();else if(open===0)s.close()})}};
      s.bind(pump)`;
    let done = false;
    const sending = weftPod.ns
      .exec([process.execPath, "-e", burst], { timeoutMs: 60_000 })
      .finally(() => (done = true));
    // Kills while the worker moves the burst: each once it reads again after the last one.
    let kills = 0;
    while (!done && kills < 12) {
      const reads = dp.counters().io.tunBatches;
      await until(`the worker to run again after kill ${kills}`, () =>
        done || dp.counters().io.tunBatches > reads ? true : undefined,
      );
      if (done) break;
      await dp.killWorkers();
      kills++;
    }
    await sending;
    await settled();
    const got = { sent: (await sent()) - before.sent, arrived: (await arrived()) - before.arrived };
    const dropped = Number(counted() - before.counted);
    expect(kills, "kills while the burst ran").toBeGreaterThanOrEqual(3);
    expect(dp.counters().workerRestarts - before.restarts).toBe(kills);
    expect(got.sent, "the burst and settled()'s one echo").toBe(BURST + 1);
    expect({ ...got, kills, dropped }).toEqual({ ...got, kills, dropped: got.sent - got.arrived });
  });

  /**
   * Under a flood, kills the worker while its flow queue holds packets, then closes the TUN ring
   * (txqueuelen 0: the kernel frees what it held and drops what comes) and runs `check` with the
   * packets held, the packets the send path had handled and the TUN reads the kernel had counted.
   */
  async function killedHolding(check: (held: number, handledBefore: bigint, read: number) => Promise<void>) {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    // One stream: a flood of several, each with a packet or two per read, can settle where every
    // flow is emptied by each send and comes back as a new (sparse) one at the next read, so that
    // the worker reads one batch per send and holds nothing (0 at ten kills in a row). One flow
    // with every packet of a read stays on the old list and is read ahead of its sends.
    // The flood is load, not what is tested: its end is awaited, its failure (a killed stream) not.
    let floodEnded = false;
    const flood = iperf(kernelPod, weftPod, { seconds: 15, udp: true, length: 1400, bitrate: "0", streams: 1 });
    flood.catch(() => {}).finally(() => (floodEnded = true));
    try {
      await sleep(500);
      const held = await killWhileHolding(dp, () => floodEnded);
      const before = handled(dp);
      weftHostIp(lab, ["link", "set", "weft0", "txqueuelen", "0"]);
      const read = tunReads(lab);
      expect(held, "the flood filled the flow queue").toBeGreaterThan(0);
      await check(held, before, read);
    } finally {
      // iperf3's control connection crosses the dataplane too.
      await lab.hosts[1].ns.ip("link set weft0 txqueuelen 1024");
      await Promise.allSettled([flood]);
    }
  }
  /**
   * Above killedHolding's waits, so that a test's end (its finally's txqueuelen) never lands in the
   * next one's: the flood's end (iperf3's 10 s to listen, its limit of 15 + 30 s, 5 s for `ss`),
   * which bounds the kills, then a check's 30 s, then what follows it.
   */
  const KILLED_HOLDING_MS = 150_000;

  it("sends what a killed worker held once its task runs again, each packet once", {
    timeout: KILLED_HOLDING_MS,
  }, async () => {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    await killedHolding(async (held, before, read) => {
      // The restart comes after the supervisor's wait (up to 1 s) and a thread's start.
      await until("the backlog to be sent", () => (backlog(dp) === 0 ? true : undefined), 30_000);
      // Nothing more was read: what was handled since the kill is the backlog, each packet once.
      expect(tunReads(lab)).toBe(read);
      expect(handled(dp) - before).toBe(BigInt(held));
    });
    expect((await ping(weftPod, kernelPod.addr, { count: 2, timeoutS: 1 })).received).toBe(2);
  });

  it("drops what a killed worker held if it died inside a flow queue call, counted, and sends on", {
    timeout: KILLED_HOLDING_MS,
  }, async () => {
    const [kernelPod] = lab.hosts[0].pods;
    const [weftPod] = lab.hosts[1].pods;
    await killedHolding(async (held, before, read) => {
      const dropsBefore = dp.counters().io.flowQueueDrops;
      // A call cut short, as a trap would leave it, before the restart: fqEnqueue traps
      // at a descriptor fqPrepare did not give, the slot before it taken off the free list and in no
      // flow's list.
      const { hp, fn, q, task } = flowQueue(dp);
      const k = fn.fqPrepare(q, task.tx.descs, task.tx.size);
      const secondOff = (hp.constant("DESC_BYTES") + hp.constant("DESC_OFF")) >> 2;
      new Int32Array(hp.memory.buffer, task.tx.descs, secondOff + 1)[secondOff] += task.tx.stride;
      expect(() => fn.fqEnqueue(q, task.tx.descs, k, k)).toThrow(WebAssembly.RuntimeError);
      await until("the new worker to take the flow queue over", () => (fn.fqCut(q) ? undefined : true), 30_000);
      expect(backlog(dp)).toBe(0);
      expect(dp.counters().io.flowQueueDrops - dropsBefore).toBe(BigInt(held));
      // Nothing of it was sent, nor read since.
      await sleep(200);
      expect(handled(dp) - before).toBe(0n);
      expect(tunReads(lab)).toBe(read);
    });
    for (const [from, to] of [
      [weftPod, kernelPod],
      [kernelPod, weftPod],
    ]) {
      const { sent, received } = await tcpTransfer(from, to, 5_000_000);
      expect(received).toEqual(sent);
    }
  });
});
