// Segmentation offloads end to end: TUN devices with TSO and vnet headers, UDP GSO/GRO sockets,
// segmenting and coalescing in Wasm. Between two weft nodes (both wire formats) and against a
// kernel vxlan peer, exact TCP transfers must arrive whole, and the counters must show that
// super-packets really were segmented and coalesced. With offloads off, the dataplane says why.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import { LabCluster, type LabPod } from "../../src/lab/cluster.js";
import { iperf, snmpCounter } from "../../src/lab/traffic.js";
import {
  dataplanePair,
  kernelPeerPair,
  OFFLOADS_OFF,
  peerOf,
  startDataplane,
  subnetOf,
} from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { Slots } from "../io/slots.js";
import { until } from "../io/until.js";
import { tcpTransfer } from "../support/tcp-transfer.js";
import { udpGsoTransfer } from "../support/udp-gso.js";

const MB = 1_000_000;
function noOffloadDrops(dp: UserspaceDataplane): void {
  const c = dp.counters();
  for (const dir of [c.tx, c.rx]) expect(dir.packets.OFFLOAD_HEADER + dir.packets.OFFLOAD_SIZE).toBe(0n);
}

for (const format of ["vxlan", "udp"] as const) {
  describe.skipIf(!canUseNetns())(`offloads between weft nodes, ${format} format`, () => {
    let lab: LabCluster;
    let dps: UserspaceDataplane[] = [];

    beforeAll(async () => {
      ({ lab, dps } = await dataplanePair(`off${format[0]}`, { format }));
    });

    afterAll(async () => {
      for (const dp of dps) await dp.stop();
      await lab?.destroy();
    });

    it("carries TCP exactly both ways, segmenting and coalescing super-packets", async () => {
      const [p1] = lab.hosts[0].pods;
      const [p2] = lab.hosts[1].pods;
      for (const dp of dps) expect(dp.counters().offload).toMatchObject({ enabled: true, udpGro: true });
      const there = await tcpTransfer(p1, p2, 50 * MB);
      expect(there.received).toEqual(there.sent);
      const back = await tcpTransfer(p2, p1, 50 * MB);
      expect(back.received).toEqual(back.sent);
      const [c1, c2] = dps.map((dp) => dp.counters());
      // Both ways: the sender cut super-packets into datagrams, the receiver merged segments again.
      expect(c1.tx.offloadSegments).toBeGreaterThan(c1.tx.packets.FORWARD);
      expect(c2.rx.offloadSegments).toBeGreaterThan(0n);
      expect(c2.tx.offloadSegments).toBeGreaterThan(c2.tx.packets.FORWARD);
      expect(c1.rx.offloadSegments).toBeGreaterThan(0n);
      for (const dp of dps) noOffloadDrops(dp);
    });

    it("carries UDP exactly, sending datagrams as GSO trains and merging them into USO super-packets", async () => {
      const [p1] = lab.hosts[0].pods;
      const [p2] = lab.hosts[1].pods;
      for (const dp of dps) expect(dp.counters().offload.tun).toContain("USO4");
      const before = dps.map((dp) => dp.counters());
      const { sent, received } = await udpGsoTransfer(p1, p2, 20, 10, 1000);
      expect(received).toEqual(sent);
      const after = dps.map((dp) => dp.counters());
      // The sender cut each USO super-packet into a train; the receiver merged the trains again.
      expect(after[0].tx.offloadSegments - before[0].tx.offloadSegments).toBe(200n);
      expect(after[1].rx.offloadSegments - before[1].rx.offloadSegments).toBeGreaterThanOrEqual(100n);
      expect(await snmpCounter(p2.ns, "Udp", "InCsumErrors")).toBe(0);
      for (const dp of dps) noOffloadDrops(dp);
    });
  });
}

describe.skipIf(!canUseNetns())("offloads against a kernel vxlan peer", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    ({ lab, dp } = await kernelPeerPair("offkvx"));
  });

  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("sends the kernel standard datagrams it accepts, and takes its single datagrams", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    expect(dp.counters().offload.enabled).toBe(true);
    const toKernel = await tcpTransfer(p2, p1, 50 * MB);
    expect(toKernel.received).toEqual(toKernel.sent);
    const fromKernel = await tcpTransfer(p1, p2, 50 * MB);
    expect(fromKernel.received).toEqual(fromKernel.sent);
    const r = await iperf(p1, p2, { seconds: 2 });
    expect(r.receivedBytes).toBeGreaterThan(0);
    const c = dp.counters();
    expect(c.tx.offloadSegments).toBeGreaterThan(c.tx.packets.FORWARD);
    // The kernel's datagrams carry no UDP checksum, so UDP GRO never merges them; weft still
    // coalesces consecutive segments of a flow before the TUN write.
    expect(c.rx.offloadSegments).toBeGreaterThan(0n);
    noOffloadDrops(dp);
  });

  it("carries UDP exactly both ways: trains to the kernel, its single datagrams checked and merged", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const toKernel = await udpGsoTransfer(p2, p1, 10, 10, 1000);
    expect(toKernel.received).toEqual(toKernel.sent);
    const before = dp.counters().rx;
    const fromKernel = await udpGsoTransfer(p1, p2, 10, 10, 1000);
    expect(fromKernel.received).toEqual(fromKernel.sent);
    const after = dp.counters().rx;
    // Single datagrams (no outer checksum): merged only after weft's own check, never trusted.
    expect(after.offloadSegments - before.offloadSegments).toBeGreaterThan(0n);
    expect(after.checksumTrusted).toBe(before.checksumTrusted);
    noOffloadDrops(dp);
  });
});

describe.skipIf(!canUseNetns())("GSO trains of single datagrams", () => {
  // The peer's reuseport program steers a train by its first datagram, so a train must carry one
  // flow: datagrams of two flows that the receiving node steers to different workers, sent in
  // runs from one sending worker, must still reach each flow's own worker.
  let lab: LabCluster;
  const dps: UserspaceDataplane[] = [];

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "trains", hosts: 2 });
    for (const [k, h] of lab.hosts.entries()) await lab.addPods(h, subnetOf(k + 1), 1, 1450);
    // One queue pair per worker: the sender reads both flows from one TUN queue, and the receiver's
    // pairs are its workers.
    dps.push(await startDataplane(lab.hosts[0], 1, "vxlan", { workers: 1, queuesPerWorker: 1 }));
    dps.push(await startDataplane(lab.hosts[1], 2, "vxlan", { workers: 2, queuesPerWorker: 1 }));
    dps[0].setPeer(peerOf(lab.hosts[1], 2));
    dps[1].setPeer(peerOf(lab.hosts[0], 1));
  });

  afterAll(async () => {
    for (const dp of dps) await dp.stop();
    await lab?.destroy();
  });

  /** Datagrams the receiving node has forwarded to its pods, per worker. */
  const perWorker = () => dps[1].counters().perQueue.map((q) => q.rx);

  it("keeps each flow on the receiving worker that owns it", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const open = (pod: LabPod, port: number) =>
      withNetns(pod.ns.name, () => UdpSocket.open({ address: pod.addr, port, rcvbuf: 1 << 21 }));
    const receiver = open(p2, 0);
    const senders: UdpSocket[] = [];
    const into = new Slots(256);
    let received = 0;
    const drain = () => {
      for (;;) {
        into.reset();
        const n = receiver.recv(into.buf, into.descs, 0, 256);
        if (n === 0) return received;
        received += n;
      }
    };
    /** Sends `n` single datagrams of 200 bytes from `from` to the receiver in one call. */
    const burst = (from: UdpSocket, n: number) => {
      const out = new Slots(n);
      for (let i = 0; i < n; i++) {
        out.put(i, new Uint8Array(200).fill(i));
        out.set(i, { ADDR: p2.addr, PORT: receiver.port });
      }
      let sent = 0;
      while (sent < n) sent += from.send(out.buf, out.descs, sent, n - sent);
    };
    try {
      // Which worker each source port's flow lands on: one datagram at a time.
      const owner = new Map<number, number>();
      for (let port = 20000; port < 20016 && new Set(owner.values()).size < 2; port++) {
        const s = open(p1, port);
        senders.push(s);
        const before = perWorker();
        const want = received + 1;
        burst(s, 1);
        await until(`port ${port}'s datagram`, () => (drain() >= want ? true : undefined));
        const after = perWorker();
        const moved = after.map((n, q) => n - before[q]);
        expect(moved.reduce((a, b) => a + b, 0n)).toBe(1n);
        owner.set(port, moved.indexOf(1n));
      }
      const a = senders.find((s) => owner.get(s.port) === 0);
      const b = senders.find((s) => owner.get(s.port) === 1);
      expect(a && b, "two flows the receiving node steers apart").toBeTruthy();
      const trustedBefore = dps[1].counters().rx.checksumTrusted;
      const before = perWorker();
      const start = received;
      // Runs of 16 from one flow then the other: the sending node's one worker reads both flows
      // from its one TUN queue, so its sends hold runs of both to one peer. A round at a time, so
      // that no ring overflows.
      for (let round = 0; round < 40; round++) {
        const want = received + 32;
        burst(a!, 16);
        burst(b!, 16);
        // A lost datagram only ends the wait: what arrived is checked below.
        await until(`round ${round}`, () => (drain() >= want ? true : undefined), 2000).catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 200));
      drain();
      expect(received - start).toBeGreaterThanOrEqual(40 * 32 * 0.9);
      const moved = perWorker().map((n, q) => n - before[q]);
      // Trains formed (their datagrams came as GRO receives, whose segments are trusted) ...
      expect(dps[1].counters().rx.checksumTrusted).toBeGreaterThan(trustedBefore);
      // ... and neither worker got datagrams of the other's flow.
      expect(moved[0]).toBeLessThanOrEqual(640n);
      expect(moved[1]).toBeLessThanOrEqual(640n);
      expect(moved[0] + moved[1]).toBeGreaterThanOrEqual(BigInt(received - start));
    } finally {
      receiver.close();
      for (const s of senders) s.close();
    }
  });
});

describe.skipIf(!canUseNetns())("offloads turned off", () => {
  it("reports why and runs the plain path", async () => {
    const lab = await LabCluster.create({ tag: "offoff", hosts: 1 });
    try {
      const dp = await startDataplane(lab.hosts[0], 1, "vxlan", { offloads: false, workers: 1 });
      const o = dp.counters().offload;
      await dp.stop();
      expect(o).toEqual(OFFLOADS_OFF);
    } finally {
      await lab.destroy();
    }
  });
});
