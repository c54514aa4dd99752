// What counters() reports (/status, /metrics) from a real dataplane's shared memory, filled with
// random counts: the same as the way it was read before its views were built once, a view per
// counter per worker and call (that reading is kept here, as the reference). An offset or stride
// off in the views built once shows as a mismatch.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataplaneCounters, UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { IO_COUNTER, IO_COUNTER_SLOTS, IO_ERRNO, type QueueTask } from "../../src/dataplane/queue-task.js";
import type { DataplaneContext, DirectionCounters } from "../../src/hotpath/context.js";
import type { HotPath } from "../../src/hotpath/module.js";
import { errnoName } from "../../src/io/native.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { makeDataplane, peerOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

const MAX_PEERS = 8;
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
/** An errno slot: none yet (0), or one the kernel gives. */
const errnoSlot = fc.constantFrom(0n, 77n, ...[1, 11, 13, 22, 90, 101, 113].map(BigInt));

describe.skipIf(!canUseNetns())("counters() of a real dataplane", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "dpcount", hosts: 1 });
    // Four pairs over two workers, and peers on next hops 0, 2 and 3 (1 freed).
    dp = makeDataplane(lab.hosts[0], 1, "vxlan", { queuesPerWorker: 2, maxPeers: MAX_PEERS });
    const host = lab.hosts[0];
    for (const i of [2, 3, 4, 5]) dp.setPeer({ ...peerOf(host, i), name: `n${i}` });
    dp.removePeer("n3");
  });
  afterAll(async () => {
    await dp?.stop();
    await lab?.destroy();
  });

  it("reports what a view per counter per worker read, for random counts", () => {
    const hp = Reflect.get(dp, "hp") as HotPath;
    const pairs = Reflect.get(dp, "pairs") as Array<{ ctx: DataplaneContext }>;
    const workers = (Reflect.get(dp, "workerTasks") as Array<{ task: QueueTask }>).map((w) => w.task);
    const buf = hp.memory.buffer;
    const slots = hp.constant("COUNTER_SLOTS");
    const peerBytes = hp.constant("PEER_COUNTER_BYTES");
    const peerWords = (MAX_PEERS * peerBytes) / 8;
    // Every counter word the dataplane has: each pair's blocks and per-peer arrays, each worker's I/O slots.
    const regions = [
      ...pairs.flatMap(({ ctx }) => [
        [ctx.countersTx, slots],
        [ctx.countersRx, slots],
        [ctx.peerTx, peerWords],
        [ctx.peerRx, peerWords],
      ]),
      ...workers.map((w) => [w.ioCounters, Object.keys(IO_COUNTER).length]),
    ];
    const words = regions.reduce((n, [, k]) => n + k, 0);
    const errnoSlots = workers.length * Object.keys(IO_ERRNO).length;

    /** counters() as it read memory before: a view per counter, per worker, per call. */
    const reference = (withPeers: boolean): Partial<DataplaneCounters> => {
      const dir = (block: number): DirectionCounters => {
        const v = new BigUint64Array(buf, block, slots);
        const packets: Record<string, bigint> = {};
        hp.verdictNames().forEach((name, code) => (packets[name] = v[code]));
        return {
          packets,
          bytesForwarded: v[hp.constant("COUNTER_BYTES_FORWARDED")],
          offloadSegments: v[hp.constant("COUNTER_OFFLOAD_SEGMENTS")],
          checksumTrusted: v[hp.constant("COUNTER_CSUM_TRUSTED")],
        };
      };
      const sumDir = (block: (c: DataplaneContext) => number): DirectionCounters => {
        const all = pairs.map((q) => dir(block(q.ctx)));
        const packets: Record<string, bigint> = {};
        for (const c of all) for (const [k, v] of Object.entries(c.packets)) packets[k] = (packets[k] ?? 0n) + v;
        const sum = (f: (c: DirectionCounters) => bigint) => all.reduce((n, c) => n + f(c), 0n);
        return {
          packets,
          bytesForwarded: sum((c) => c.bytesForwarded),
          offloadSegments: sum((c) => c.offloadSegments),
          checksumTrusted: sum((c) => c.checksumTrusted),
        };
      };
      const ioSlot = (w: QueueTask, slot: number) => new BigUint64Array(buf, w.ioCounters, IO_COUNTER_SLOTS)[slot];
      const peerSlot = (base: number, nextHop: number, word: number) =>
        new BigUint64Array(buf, base + nextHop * peerBytes, 2)[word];
      const peerSum = (base: (c: DataplaneContext) => number, nextHop: number, word: number) =>
        pairs.reduce((n, q) => n + peerSlot(base(q.ctx), nextHop, word), 0n);
      return {
        tx: sumDir((c) => c.countersTx),
        rx: sumDir((c) => c.countersRx),
        ...(withPeers && {
          peers: Object.fromEntries(
            dp.listPeers().map((p) => [
              p.name,
              {
                txPackets: peerSum((c) => c.peerTx, p.nextHop, 0),
                txBytes: peerSum((c) => c.peerTx, p.nextHop, 1),
                rxPackets: peerSum((c) => c.peerRx, p.nextHop, 0),
                rxBytes: peerSum((c) => c.peerRx, p.nextHop, 1),
              },
            ]),
          ),
        }),
        io: Object.fromEntries(
          Object.entries(IO_COUNTER).map(([name, slot]) => [name, workers.reduce((n, w) => n + ioSlot(w, slot), 0n)]),
        ) as DataplaneCounters["io"],
        lastErrno: workers.map((w) =>
          Object.fromEntries(
            Object.entries(IO_ERRNO).flatMap(([op, slot]) =>
              ioSlot(w, slot) === 0n ? [] : [[op, errnoName(Number(ioSlot(w, slot)))]],
            ),
          ),
        ),
        perQueue: pairs.map((q) => ({
          tx: dir(q.ctx.countersTx).packets.FORWARD,
          rx: dir(q.ctx.countersRx).packets.FORWARD,
        })),
      };
    };

    fc.assert(
      fc.property(
        fc.array(u64, { minLength: words, maxLength: words }),
        fc.array(errnoSlot, { minLength: errnoSlots, maxLength: errnoSlots }),
        (counts, errnos) => {
          let k = 0;
          for (const [at, n] of regions) new BigUint64Array(buf, at, n).set(counts.slice(k, (k += n)));
          let e = 0;
          for (const w of workers)
            for (const slot of Object.values(IO_ERRNO))
              new BigUint64Array(buf, w.ioCounters, IO_COUNTER_SLOTS)[slot] = errnos[e++];
          for (const withPeers of [false, true]) {
            const got = withPeers ? dp.counters({ peers: true }) : dp.counters();
            expect(got).toStrictEqual({ ...got, ...reference(withPeers) });
            expect("peers" in got).toBe(withPeers);
          }
        },
      ),
      // A mismatch is reported as found: shrinking hundreds of counts would take long and say no more.
      { numRuns: 100, endOnFailure: true },
    );
  });
});
