// The userspace dataplane end to end: two hosts in namespaces (underlay on a shared switch, cni0
// and two pods each), real TUN devices, sockets, worker threads, ping and iperf3.
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { DEFAULT_QUEUES_PER_WORKER, WORKER_MAX_PAIRS } from "../../src/dataplane/defaults.js";
import type { LabCluster, LabHost } from "../../src/lab/cluster.js";
import { iperf, ping } from "../../src/lab/traffic.js";
import { dataplanePair, makeDataplane } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;
interface Node {
  host: LabHost;
  dp: UserspaceDataplane;
}

// Two workers with the default queue pairs each, with one and with two: flows spread over all the
// TUN queues and sockets, and both directions of a flow stay on one pair. Enough TCP streams that
// every pair gets some (one without any, by chance: below 1e-5).
const CONFIGS: Array<{ format: "vxlan" | "udp"; queuesPerWorker?: number; streams: number }> = [
  { format: "vxlan", streams: 128 },
  { format: "udp", queuesPerWorker: 1, streams: 16 },
  { format: "vxlan", queuesPerWorker: 2, streams: 48 },
];

for (const { format, queuesPerWorker, streams } of CONFIGS) {
  const pairs = 2 * (queuesPerWorker ?? DEFAULT_QUEUES_PER_WORKER);
  describe.skipIf(!canUseNetns())(`userspace dataplane, ${format} wire format, ${pairs} queue pairs`, () => {
    let lab: LabCluster;
    let n1: Node;
    let n2: Node;

    beforeAll(async () => {
      const pair = await dataplanePair(`dp${format}${queuesPerWorker ?? "d"}`, {
        format,
        pods: 2,
        extra: queuesPerWorker === undefined ? {} : { queuesPerWorker },
      });
      lab = pair.lab;
      [n1, n2] = pair.dps.map((dp, k) => ({ host: lab.hosts[k], dp }));
    });

    afterAll(async () => {
      await n1?.dp.stop();
      await n2?.dp.stop();
      await lab?.destroy();
    });

    it("carries pings between pods on different hosts, both ways", async () => {
      const [a1] = n1.host.pods;
      const [b1] = n2.host.pods;
      expect((await ping(a1, b1.addr, { count: 3 })).received).toBe(3);
      expect((await ping(b1, a1.addr, { count: 3 })).received).toBe(3);
      const c = n1.dp.counters();
      expect(c.peers[n2.host.name].txPackets).toBeGreaterThanOrEqual(6n); // requests out, replies out
      expect(c.peers[n2.host.name].rxPackets).toBeGreaterThanOrEqual(6n);
      // The route table (64 MiB of tbl24) is on huge pages by default, and answers as before.
      expect(c.routeTablePages.reason).toBeUndefined();
      expect(c.routeTablePages.advisedBytes).toBeGreaterThanOrEqual(64 << 20);
    });

    it("moves 100 MB of TCP with iperf3", async () => {
      const r = await iperf(n2.host.pods[1], n1.host.pods[1], { bytes: 100 * MB });
      expect(r.sentBytes).toBeGreaterThanOrEqual(100 * MB);
      // iperf3 stops counting at its end-of-test message (also on a bare veth), so its receive
      // count trails by what is in flight; the exact check is the hashed transfer below.
      expect(r.receivedBytes).toBeGreaterThan(0.9 * r.sentBytes);
    });

    it("delivers 100 MB of TCP exactly (byte count and SHA-256 match)", async () => {
      const { sent, received } = await tcpTransfer(n1.host.pods[0], n2.host.pods[0], 100 * MB);
      expect(received).toEqual(sent);
      expect(sent.bytes).toBe(100 * MB);
    });

    it("keeps a ping's requests and replies on one queue pair per host (ICMP steered by echo identifier)", async () => {
      const count = 40;
      // Earlier tests' TCP may still trickle through (FINs, retransmits): start once both
      // dataplanes' counters have stood still for 500 ms (at most 10 s). It runs before the test
      // of 128 streams, one of whose stragglers came after 200 ms of stillness (in CI, on another pair).
      const snapshot = () => [n1.dp.counters().perQueue, n2.dp.counters().perQueue];
      const text = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? String(x) : x));
      let before = snapshot();
      for (let i = 0; i < 20; i++) {
        await sleep(500);
        const now = snapshot();
        if (text(now) === text(before)) break;
        before = now;
      }
      const r = await ping(n1.host.pods[0], n2.host.pods[0].addr, { count, intervalS: 0.01 });
      // Not all of them need come back: where the machine starves a worker past the receive
      // queue's sojourn limit, CoDel drops (one of 40 was lost once in CI). The claim is where
      // those that did arrive went.
      expect(r.received).toBeGreaterThanOrEqual(count - 5);
      // On the server's host, the pair that received the requests also read the replies from
      // the TUN device: the device learns the flow's
      // queue from the requests written on it — after the first one's reply was queued, so that
      // one may go elsewhere. On the client's host the replies all reach one pair too; which
      // queue the device reads the requests on is the kernel's choice (its flow table follows
      // the replies written on it only after a while, 10–20 echoes in our runs).
      const busiest = (dp: UserspaceDataplane, k: number) => {
        const d = dp.counters().perQueue.map((c, q) => ({ rx: c.rx - before[k][q].rx, tx: c.tx - before[k][q].tx }));
        const all = d.reduce((sum, c) => sum + c.rx, 0n);
        return { ...d.reduce((best, c) => (c.rx > best.rx ? c : best)), all };
      };
      // Every request that reached the server's host, and every reply the client's, on one pair.
      const server = busiest(n2.dp, 1);
      expect(server.rx).toBe(server.all);
      expect(server.rx).toBeGreaterThanOrEqual(BigInt(r.received));
      expect(server.tx).toBeGreaterThanOrEqual(BigInt(r.received - 1));
      const client = busiest(n1.dp, 0);
      expect(client.rx).toBe(client.all);
      expect(client.rx).toBeGreaterThanOrEqual(BigInt(r.received));
    });

    it(`spreads flows over all ${pairs} queue pairs (inner-flow steering on receive, TUN queues on send)`, async () => {
      const before = n1.dp.counters().perQueue;
      await iperf(n1.host.pods[1], n2.host.pods[1], { seconds: 2, streams });
      const after = n1.dp.counters().perQueue;
      expect(after).toHaveLength(pairs);
      // Each pair gets some of the flows, in both directions.
      for (const [q, c] of after.entries()) {
        expect({ q, rx: c.rx - before[q].rx > 1000n, tx: c.tx - before[q].tx > 1000n }).toEqual({
          q,
          rx: true,
          tx: true,
        });
      }
    });

    if (queuesPerWorker === 2)
      it("refuses a pair count the worker's wait cannot watch, and says what to give", () => {
        for (const bad of [0, 1.5, WORKER_MAX_PAIRS + 1])
          expect(() => makeDataplane(n2.host, 2, format, { mtu: 1400, queuesPerWorker: bad })).toThrow(
            expect.objectContaining({
              code: "DATAPLANE_QUEUES",
              message: expect.stringContaining(`from 1 to ${WORKER_MAX_PAIRS}`),
            }),
          );
        // The TUN driver's limit: 256 queues in all.
        expect(() => makeDataplane(n2.host, 2, format, { mtu: 1400, workers: 20, queuesPerWorker: 13 })).toThrow(
          expect.objectContaining({
            code: "DATAPLANE_QUEUES",
            message: expect.stringContaining("= 260 TUN queues, above the kernel's 256"),
          }),
        );
      });

    // How fast it stops is a benchmark matter; here only that it stops and cleans up.
    it("stops, leaving no device and no socket behind", async () => {
      await n2.dp.stop();
      await expect(n2.host.ns.kernel.ipJson(["link", "show", "weft0"])).rejects.toThrow(/does not exist/);
      // The port is free again: a new dataplane can bind it.
      const again = makeDataplane(n2.host, 2, format, { mtu: 1400, workers: 1 });
      await again.stop();
    });
  });
}
