// The userspace dataplane end to end: two hosts in namespaces (underlay on a shared switch, cni0
// and two pods each), real TUN devices, sockets, worker threads, ping and iperf3.
import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import {
  DEFAULT_MIN_WORKERS,
  DEFAULT_QUEUES_PER_WORKER,
  MAX_WORKERS,
  WORKER_MAX_PAIRS,
} from "../../src/dataplane/defaults.js";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import type { LabCluster, LabHost, LabPod } from "../../src/lab/cluster.js";
import { iperf, ping } from "../../src/lab/traffic.js";
import { dataplanePair, makeDataplane } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { Slots } from "../io/slots.js";
import { until } from "../io/until.js";
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
      const c = n1.dp.counters({ peers: true });
      expect(c.peers![n2.host.name].txPackets).toBeGreaterThanOrEqual(6n); // requests out, replies out
      expect(c.peers![n2.host.name].rxPackets).toBeGreaterThanOrEqual(6n);
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
      // On each host one pair read every request and reply from the TUN device and received every
      // one from its socket: the sockets' reuseport program and the device's steering program hash
      // the echo identifier alike (before the device had our program, the client's host read the
      // first 10–20 requests on a queue of the device's own choosing).
      const moved = (dp: UserspaceDataplane, k: number) =>
        dp
          .counters()
          .perQueue.map((c, q) => ({ q, rx: c.rx - before[k][q].rx, tx: c.tx - before[k][q].tx }))
          .filter((c) => c.rx > 0n || c.tx > 0n);
      for (const [k, dp] of [n1.dp, n2.dp].entries()) {
        const busy = moved(dp, k);
        expect(busy, `host ${k + 1}: the pairs that moved packets`).toHaveLength(1);
        expect(busy[0].rx).toBeGreaterThanOrEqual(BigInt(r.received));
        expect(busy[0].tx).toBeGreaterThanOrEqual(BigInt(r.received));
      }
      expect(n1.dp.counters().tunSteering).toEqual({ by: "program" });
    });

    it("keeps a one-way UDP flow on its pair past the TUN flow table's 3 s, where its one reply came in", async () => {
      const [a] = n1.host.pods;
      const [b] = n2.host.pods;
      const open = (pod: LabPod) => withNetns(pod.ns.name, () => UdpSocket.open({ address: pod.addr, port: 0 }));
      const [from, to] = [open(a), open(b)];
      const send = (sock: UdpSocket, dst: LabPod, port: number, n: number) => {
        const out = new Slots(n);
        for (let i = 0; i < n; i++) {
          out.put(i, new Uint8Array(200).fill(i));
          out.set(i, { ADDR: dst.addr, PORT: port });
        }
        let sent = 0;
        while (sent < n) sent += sock.send(out.buf, out.descs, sent, n - sent);
      };
      const inbox = new Slots(256);
      const drain = (sock: UdpSocket) => {
        inbox.reset();
        return sock.recv(inbox.buf, inbox.descs, 0, 256);
      };
      try {
        // One datagram back first, as iperf3's handshake: host 1 writes it on the pair its socket
        // program picks, and the device's flow table alone would then send the flow there for 3 s
        // and on the queue of the device's own hash after that.
        const start = n1.dp.counters().perQueue;
        send(to, a, from.port, 1);
        await until("the reply", () => (drain(from) > 0 ? true : undefined));
        const replyPair = n1.dp.counters().perQueue.findIndex((c, q) => c.rx > start[q].rx);
        const before = n1.dp.counters().perQueue;
        let got = 0;
        for (let round = 0; round < 45; round++) {
          send(from, b, to.port, 10);
          await sleep(100);
          got += drain(to);
        }
        expect(got).toBeGreaterThan(400);
        const sentOn = n1.dp
          .counters()
          .perQueue.map((c, q) => ({ q, tx: c.tx - before[q].tx }))
          .filter((c) => c.tx > 0n);
        expect(sentOn.map((c) => c.q)).toEqual([replyPair]);
      } finally {
        from.close();
        to.close();
      }
    });

    it(`spreads flows over all ${pairs} queue pairs (inner-flow steering on receive, TUN queues on send)`, async () => {
      // Each pair must move over 1,000 packets each way, far above what earlier tests leave
      // straggling. Host 1 serves, so its sends are the streams' ACKs, one per coalesced
      // super-packet its pod takes: 1,100–2,700 per pair in 2 s on an idle machine, below 1,000 on
      // one loaded by two busy loops (likely its one failure in CI). So the streams run in rounds of
      // 2 s until every pair got that far, each round new flows drawn over the pairs; a pair that
      // steering never picks stays empty however many rounds run.
      const before = n1.dp.counters().perQueue;
      const moved = () =>
        n1.dp
          .counters()
          .perQueue.map((c, q) => ({ q, rx: c.rx - before[q].rx > 1000n, tx: c.tx - before[q].tx > 1000n }));
      for (let round = 0; round < 8 && !moved().every((c) => c.rx && c.tx); round++)
        await iperf(n1.host.pods[1], n2.host.pods[1], { seconds: 2, streams });
      const after = moved();
      expect(after).toHaveLength(pairs);
      // Each pair gets some of the flows, in both directions.
      for (const c of after) expect(c).toEqual({ q: c.q, rx: true, tx: true });
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
      // The port is free again: a new dataplane can bind it, here with the default worker count
      // (the agent's when net-conf.json gives none): one per core, at least DEFAULT_MIN_WORKERS,
      // at most MAX_WORKERS.
      const again = makeDataplane(n2.host, 2, format, { mtu: 1400, workers: undefined });
      try {
        expect(again.workers).toBe(Math.min(Math.max(availableParallelism(), DEFAULT_MIN_WORKERS), MAX_WORKERS));
        expect(again.counters().perQueue.length % again.workers).toBe(0);
      } finally {
        await again.stop();
      }
    });
  });
}
