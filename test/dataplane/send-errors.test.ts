// A worker's sends to peers the kernel refuses, through the worker's own drain (drainer) over a
// real socket in a namespace the test creates: a refused train costs one native call, and each of
// its datagrams counts in sendErrors. Before, udpSend threw for the first message, the drain
// skipped one descriptor per throw, and a batch of 256 cost 256 calls and exceptions.
// TUN writes the kernel refuses the same way: counted in the result, one call per batch (before,
// each refused packet threw). The last refused send's errno shows by name in counters().lastErrno
// (/status), from a real dataplane. The result's layout has one definition, the addon's. A drain
// skips a bad descriptor and goes on, but stops at a closed queue's or deleted device's first throw
// (before, every descriptor left threw and counted as an error). And a worker terminated right
// after a refused batch, at the drain's next call, keeps it counted.
import { constants } from "node:os";
import { pathToFileURL } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DrainSlots, drainer } from "../../src/dataplane/worker.js";
import { IO_COUNTER, IO_COUNTER_SLOTS, IO_ERRNO } from "../../src/dataplane/queue-task.js";
import {
  BATCH_DONE_MASK,
  BATCH_ERRNO_UNIT,
  BATCH_FAILED_MASK,
  BATCH_FAILED_SHIFT,
  batchDone,
  batchErrno,
  batchFailed,
  checkAddon,
  errnoName,
  native,
} from "../../src/io/native.js";
import { withNetns } from "../../src/io/netns.js";
import { TunQueue } from "../../src/io/tun.js";
import { UdpSocket } from "../../src/io/udp.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { projectFile } from "../../src/paths.js";
import { buildEcho, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, parseEcho } from "../io/icmp.js";
import { Slots } from "../io/slots.js";
import { until } from "../io/until.js";
import { macOf, mtuOf, startDataplane, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns, Netns } from "../support/netns.js";

const A = parseIpv4("198.18.0.1");
const FAR = parseIpv4("198.18.0.250");
const N = 256;
const { errno } = constants;
const SEND: DrainSlots = {
  errors: IO_COUNTER.sendErrors,
  shortfall: IO_COUNTER.sendShortfall,
  errno: IO_ERRNO.send,
  toDo: 1,
};
const TUN_SLOTS: DrainSlots = {
  errors: IO_COUNTER.tunWriteErrors,
  shortfall: IO_COUNTER.tunWriteShortfall,
  errno: IO_ERRNO.tunWrite,
  toDo: 2,
};

describe("the batch result's layout", () => {
  it("is the addon's: done, the flag bit, failed and errno in fields of their own that hold a batch", () => {
    expect(native.BATCH_DONE_MASK).toBe(BATCH_DONE_MASK);
    const failedBits = BATCH_FAILED_MASK * 2 ** BATCH_FAILED_SHIFT;
    for (const [field, max] of [
      [BATCH_DONE_MASK, native.MAX_BATCH],
      [BATCH_FAILED_MASK, native.MAX_BATCH],
    ])
      expect(field).toBeGreaterThanOrEqual(max);
    expect(BATCH_DONE_MASK & native.UDP_SEND_GSO_REFUSED).toBe(0);
    expect(native.UDP_SEND_GSO_REFUSED).toBeLessThan(2 ** BATCH_FAILED_SHIFT);
    expect(failedBits + BATCH_DONE_MASK + native.UDP_SEND_GSO_REFUSED).toBeLessThan(2 ** 31);
    expect(BATCH_ERRNO_UNIT).toBe(2 ** 32);
  });

  it("is refused, with what to do, from an addon of another version (one built before it was exported has none)", () => {
    const { ABI_VERSION: _, ...stale } = native;
    for (const other of [stale, { ...native, ABI_VERSION: native.ABI_VERSION + 1 }])
      expect(() => checkAddon(other as typeof native)).toThrow(
        expect.objectContaining({
          code: "IO_ADDON_NOT_BUILT",
          message: expect.stringMatching(/another checkout.*npm install/),
        }),
      );
    expect(checkAddon(native)).toBe(native);
  });

  it("names errnos as the kernel does, EBADFD (a deleted TUN device) too", () => {
    expect([errnoName(constants.errno.EHOSTUNREACH), errnoName(77)]).toEqual(["EHOSTUNREACH", "EBADFD"]);
  });
});

describe.skipIf(!canUseNetns())("sends the kernel refuses", () => {
  let ns: Netns;
  let socket: UdpSocket;
  let tun: TunQueue;

  beforeAll(async () => {
    ns = await Netns.create("sender");
    await ns.ip("link set lo up");
    await ns.ip("addr add 198.18.0.1/32 dev lo");
    await ns.ip("route add unreachable 198.18.0.250/32");
    tun = withNetns(ns.name, () => TunQueue.open("wt0"));
    await ns.ip("addr add 198.19.0.1/24 dev wt0");
    await ns.ip("link set wt0 up");
    socket = withNetns(ns.name, () => UdpSocket.open({ address: A, port: 0 }));
    socket.trains = true;
  });
  afterAll(async () => {
    socket?.close();
    tun?.close();
    await ns?.destroy();
  });

  /** N datagrams of one flow tag to addr:9, which trains join by 64. */
  function batch(addr: number): Slots {
    const s = new Slots(N);
    for (let i = 0; i < N; i++) {
      s.put(i, new Uint8Array(200).fill(i & 255));
      s.set(i, { ADDR: addr, PORT: 9, FLAGS: 5 << native.DESC_FLOW_TAG_SHIFT });
    }
    return s;
  }

  for (const [what, addr, code] of [
    ["an unreachable route", FAR, "EHOSTUNREACH"],
    ["the broadcast address without SO_BROADCAST", parseIpv4("255.255.255.255"), "EACCES"],
  ] as const) {
    it(`counts a batch of trains to ${what} in sendErrors, in one native call`, () => {
      const s = batch(addr);
      const io = new BigUint64Array(IO_COUNTER_SLOTS);
      const held = new Int32Array(4);
      const results: number[] = [];
      let calls = 0;
      const send = (b: Uint8Array, d: Int32Array, first: number, count: number) => {
        calls++;
        const r = socket.send(b, d, first, count);
        results.push(r);
        return r;
      };
      drainer(s.buf, io, held)(send, s.descs, 0, N, SEND);
      expect(io[IO_COUNTER.sendErrors]).toBe(BigInt(N));
      expect(io[IO_ERRNO.send]).toBe(BigInt(errno[code]));
      expect(io[IO_COUNTER.sendShortfall]).toBe(0n);
      expect(held[1]).toBe(0);
      expect(calls).toBe(1);
      expect([batchDone(results[0]), batchFailed(results[0]), batchErrno(results[0])]).toEqual([N, N, errno[code]]);
    });
  }

  it("sends the good descriptors around a refused train in the same call", () => {
    const s = batch(A);
    // 0..63 to ourselves (discarded at port 9 unread: no socket), 64..127 refused, 128.. to ourselves.
    for (let i = 64; i < 128; i++) s.set(i, { ADDR: FAR });
    const r = socket.send(s.buf, s.descs, 0, N);
    expect([batchDone(r), batchFailed(r), batchErrno(r)]).toEqual([N, 64, errno.EHOSTUNREACH]);
  });

  /** n echo requests from 198.19.0.2 to A, each one's seq its index: written on a TUN queue, the kernel answers. */
  function echoes(n: number): Slots {
    const s = new Slots(n);
    for (let i = 0; i < n; i++)
      s.put(
        i,
        buildEcho({
          src: parseIpv4("198.19.0.2"),
          dst: A,
          type: ICMP_ECHO_REQUEST,
          id: 1,
          seq: i,
          data: new Uint8Array(8),
        }),
      );
    return s;
  }

  /** A drain of `s`'s descriptors onto `q` as the worker drains replies: the write calls it made, and its counters. */
  function drainTun(q: TunQueue, s: Slots) {
    const io = new BigUint64Array(IO_COUNTER_SLOTS);
    const held = new Int32Array(4);
    let calls = 0;
    const write = (b: Uint8Array, d: Int32Array, first: number, count: number) => {
      calls++;
      return q.write(b, d, first, count);
    };
    held[TUN_SLOTS.toDo] = s.size;
    drainer(s.buf, io, held)(write, s.descs, 0, s.size, TUN_SLOTS);
    return {
      calls,
      errors: io[IO_COUNTER.tunWriteErrors],
      shortfall: io[IO_COUNTER.tunWriteShortfall],
      errno: io[IO_ERRNO.tunWrite],
      toDo: held[TUN_SLOTS.toDo],
    };
  }

  /** The seqs of the next `n` echo replies read from tun, in order. */
  async function replies(n: number): Promise<number[]> {
    const seqs = new Set<number>();
    await until(`${n} echo replies`, () => {
      const r = new Slots(16);
      const k = batchDone(tun.read(r.buf, r.descs, 0, 16));
      for (let i = 0; i < k; i++) {
        const echo = parseEcho(r.packet(i));
        if (echo?.type === ICMP_ECHO_REPLY) seqs.add(echo.seq);
      }
      return seqs.size >= n ? true : undefined;
    });
    return [...seqs].sort();
  }

  it("counts the packets a TUN write refuses in tunWriteErrors, in one native call, and writes the rest", async () => {
    const s = echoes(8);
    for (const i of [2, 5]) s.buf[s.get(i, "OFF")] = 0x10; // IP version 1: the kernel refuses it (EINVAL)
    const io = new BigUint64Array(IO_COUNTER_SLOTS);
    const results: number[] = [];
    const write = (b: Uint8Array, d: Int32Array, first: number, count: number) => {
      results.push(tun.write(b, d, first, count));
      return results.at(-1)!;
    };
    drainer(s.buf, io, new Int32Array(4))(write, s.descs, 0, 8, TUN_SLOTS);
    expect(results.map((r) => [batchDone(r), batchFailed(r), batchErrno(r)])).toEqual([[8, 2, errno.EINVAL]]);
    expect([io[IO_COUNTER.tunWriteErrors], io[IO_COUNTER.tunWriteShortfall], io[IO_ERRNO.tunWrite]]).toEqual([
      2n,
      0n,
      BigInt(errno.EINVAL),
    ]);
    // The kernel answers the six it took.
    expect(await replies(6)).toEqual([0, 1, 3, 4, 6, 7]);
  });

  it("skips a bad descriptor in a TUN drain and writes the ones after it", async () => {
    const s = echoes(8);
    s.set(3, { OFF: 1 << 30 });
    // 0..2, the throw at 3, 4..7.
    expect(drainTun(tun, s)).toEqual({ calls: 3, errors: 1n, shortfall: 0n, errno: 0n, toDo: 0 });
    expect(await replies(7)).toEqual([0, 1, 2, 4, 5, 6, 7]);
  });

  // Before, each descriptor left threw in a call of its own and counted in tunWriteErrors.
  for (const [what, end, errnoOf] of [
    ["a deleted device (EBADFD)", (q: TunQueue) => ns.ip(`link del ${q.name}`), 77n],
    ["a closed queue (IO_CLOSED)", (q: TunQueue) => q.close(), 0n],
  ] as const)
    it(`stops a TUN drain onto ${what} at its first throw: one error, the rest in tunWriteShortfall`, async () => {
      const q = withNetns(ns.name, () => TunQueue.open("wt1"));
      try {
        await end(q);
        expect(drainTun(q, echoes(8))).toEqual({ calls: 1, errors: 1n, shortfall: 7n, errno: errnoOf, toDo: 0 });
      } finally {
        q.close();
      }
    });

  it("keeps a refused batch counted when its worker is terminated at the drain's next call", async () => {
    const s = batch(FAR);
    const shared = new SharedArrayBuffer(IO_COUNTER_SLOTS * 8 + 16);
    const io = new BigUint64Array(shared, 0, IO_COUNTER_SLOTS);
    // held[1]: what is still to write, as serve sets it before the drain; [2]: sent; [3]: drained.
    const held = new Int32Array(shared, IO_COUNTER_SLOTS * 8, 4);
    held[1] = N;
    const waker = native.wakerOpen();
    // The write returns only once terminate() was called: the terminate lands at the drain's first
    // call or back edge after it, as it does in a worker killed while it drains.
    const code = `
      const { workerData: w } = require("node:worker_threads");
      (async () => {
        const { drainer } = await import(w.worker);
        const io = require(w.addon);
        const counters = new BigUint64Array(w.shared, 0, w.slots.length);
        const held = new Int32Array(w.shared, w.slots.length * 8, 4);
        const write = (b, d, first, count) => {
          const r = io.udpSend(w.fd, b, d, first, count, true, true);
          Atomics.store(held, 2, 1);
          io.wait([], w.waker, 10000);
          return r;
        };
        drainer(new Uint8Array(w.memory.buffer), counters, held)(write, new Int32Array(w.memory.buffer), 0, w.n, w.send);
        Atomics.store(held, 3, 1);
      })();`;
    const worker = new Worker(code, {
      eval: true,
      workerData: {
        worker: pathToFileURL(projectFile("dist", "src", "dataplane", "worker.js")).href,
        addon: projectFile("native", "build", "Release", "weft_io.node"),
        memory: s.memory,
        shared,
        slots: { length: IO_COUNTER_SLOTS },
        fd: socket.fd,
        waker,
        n: N,
        send: SEND,
      },
    });
    try {
      await until("the worker's send", () => (Atomics.load(held, 2) === 1 ? true : undefined), 10_000);
      // The worker is asleep in wait() by now, where a terminate waits for it to return.
      await sleep(200);
      const exit = worker.terminate();
      native.wakerSignal(waker);
      await exit;
      // Before, the errors were added after batchDone()'s and batchFailed()'s calls: lost.
      expect({ errors: io[IO_COUNTER.sendErrors], toDo: held[1], drained: held[3] }).toEqual({
        errors: BigInt(N),
        toDo: 0,
        drained: 0,
      });
    } finally {
      await worker.terminate();
      native.closeFd(waker);
    }
  });
});

describe.skipIf(!canUseNetns())("a dataplane's refused sends", () => {
  it("show the errno's name in counters().lastErrno, /status's dataplane, beside sendErrors", async () => {
    const lab = await LabCluster.create({ tag: "senderr", hosts: 1 });
    const [host] = lab.hosts;
    try {
      await lab.addPods(host, subnetOf(1), 1, mtuOf("vxlan"));
      await host.ns.ip("route add unreachable 198.18.0.250/32");
      const dp = await startDataplane(host, 1);
      try {
        dp.setPeer({ name: "far", subnet: subnetOf(9), underlay: FAR, port: 8472, vtepMac: macOf(9) });
        expect(dp.counters().lastErrno).toEqual([{}, {}]);
        await ping(host.pods[0], subnetOf(9).addr + 1, { count: 3, intervalS: 0.2, timeoutS: 2 });
        const c = dp.counters();
        expect(c.io.sendErrors).toBeGreaterThanOrEqual(3n);
        expect(c.lastErrno.filter((w) => w.send !== undefined)).toEqual([{ send: "EHOSTUNREACH" }]);
        expect(JSON.parse(JSON.stringify(c.lastErrno))).toEqual(c.lastErrno);
      } finally {
        await dp.stop();
      }
    } finally {
      await lab.destroy();
    }
  });
});
