// A worker's sends to peers the kernel refuses, through the worker's own drain (drainer) over a
// real socket in a namespace the test creates: a refused train costs one native call, and each of
// its datagrams counts in sendErrors. Before, udpSend threw for the first message, the drain
// skipped one descriptor per throw, and a batch of 256 cost 256 calls and exceptions.
import { constants } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { drainer } from "../../src/dataplane/worker.js";
import { IO_COUNTER, IO_COUNTER_SLOTS } from "../../src/dataplane/queue-task.js";
import { batchDone, batchErrno, batchFailed, native } from "../../src/io/native.js";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { Slots } from "../io/slots.js";
import { canUseNetns, Netns } from "../support/netns.js";

const A = parseIpv4("198.18.0.1");
const N = 256;
const { errno } = constants;

describe.skipIf(!canUseNetns())("sends the kernel refuses", () => {
  let ns: Netns;
  let socket: UdpSocket;

  beforeAll(async () => {
    ns = await Netns.create("sender");
    await ns.ip("link set lo up");
    await ns.ip("addr add 198.18.0.1/32 dev lo");
    await ns.ip("route add unreachable 198.18.0.250/32");
    socket = withNetns(ns.name, () => UdpSocket.open({ address: A, port: 0 }));
    socket.trains = true;
  });
  afterAll(async () => {
    socket?.close();
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
    ["an unreachable route", parseIpv4("198.18.0.250"), "EHOSTUNREACH"],
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
      drainer(s.buf, io, held)(send, s.descs, 0, N, IO_COUNTER.sendErrors, IO_COUNTER.sendShortfall, 1);
      expect(io[IO_COUNTER.sendErrors]).toBe(BigInt(N));
      expect(io[IO_COUNTER.sendShortfall]).toBe(0n);
      expect(held[1]).toBe(0);
      expect(calls).toBe(1);
      expect([batchDone(results[0]), batchFailed(results[0]), batchErrno(results[0])]).toEqual([N, N, errno[code]]);
    });
  }

  it("sends the good descriptors around a refused train in the same call", () => {
    const s = batch(A);
    // 0..63 to ourselves (discarded at port 9 unread: no socket), 64..127 refused, 128.. to ourselves.
    for (let i = 64; i < 128; i++) s.set(i, { ADDR: parseIpv4("198.18.0.250") });
    const r = socket.send(s.buf, s.descs, 0, N);
    expect([batchDone(r), batchFailed(r), batchErrno(r)]).toEqual([N, 64, errno.EHOSTUNREACH]);
  });
});
