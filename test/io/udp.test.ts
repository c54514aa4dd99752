// Batched UDP over a veth pair between two namespaces the test creates.
import { constants } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { batchDone, batchErrno, batchFailed, native } from "../../src/io/native.js";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket, type UdpOptions } from "../../src/io/udp.js";
import { waitReadable } from "../../src/io/wait.js";
import { canUseNetns, Netns, vethPair } from "../support/netns.js";
import { Slots } from "./slots.js";
import { until } from "./until.js";

const A = parseIpv4("198.18.0.1");
const B = parseIpv4("198.18.0.2");

/** Packet i's payload: its index in the first two bytes, then a length and filler that vary with i. */
function payload(i: number): Uint8Array {
  const p = new Uint8Array(2 + ((i * 37) % 1400)).fill(i & 255);
  p[0] = i >> 8;
  p[1] = i & 255;
  return p;
}

describe.skipIf(!canUseNetns())("UDP sockets", () => {
  let nsA: Netns;
  let nsB: Netns;
  const sockets: UdpSocket[] = [];

  beforeAll(async () => {
    nsA = await Netns.create("udpa");
    nsB = await Netns.create("udpb");
    await vethPair(nsA, "va", "198.18.0.1/24", nsB, "vb", "198.18.0.2/24");
  });
  afterAll(async () => {
    for (const s of sockets) s.close();
    await nsA?.destroy();
    await nsB?.destroy();
  });

  function open(ns: Netns, options: UdpOptions): UdpSocket {
    const sock = withNetns(ns.name, () => UdpSocket.open(options));
    sockets.push(sock);
    return sock;
  }

  /** Receives on `sock` into `s` until `want` packets arrived (slots 0..want-1). */
  function receive(sock: UdpSocket, s: Slots, want: number): Promise<number> {
    let got = 0;
    return until(`${want} datagrams`, () => {
      got += sock.recv(s.buf, s.descs, got, Math.min(want - got, 256));
      return got === want ? got : undefined;
    });
  }

  it("round-trips a batch with per-packet peers intact", async () => {
    const a = open(nsA, { address: A, port: 0, rcvbuf: 1 << 20 });
    const b1 = open(nsB, { address: "198.18.0.2", port: 0, rcvbuf: 1 << 20 });
    const b2 = open(nsB, { address: "198.18.0.2", port: 0, rcvbuf: 1 << 20 });
    const out = new Slots(128);
    for (let i = 0; i < 128; i++) {
      out.put(i, payload(i));
      out.set(i, { ADDR: B, PORT: i % 2 ? b2.port : b1.port });
    }
    let sent = 0;
    await until("all 128 sent", () =>
      (sent += a.send(out.buf, out.descs, sent, 128 - sent)) === 128 ? true : undefined,
    );

    for (const [sock, parity] of [
      [b1, 0],
      [b2, 1],
    ] as const) {
      const s = new Slots(64);
      await receive(sock, s, 64);
      for (let k = 0; k < 64; k++) {
        const p = s.packet(k);
        const i = (p[0] << 8) | p[1];
        expect(i % 2).toBe(parity);
        expect(p).toEqual(payload(i));
        expect(s.get(k, "ADDR") >>> 0).toBe(A);
        expect(s.get(k, "PORT")).toBe(a.port);
        expect(s.get(k, "FLAGS")).toBe(0);
      }
      // Echo back with the descriptors as received: ADDR/PORT name the sender.
      expect(sock.send(s.buf, s.descs, 0, 64)).toBe(64);
    }

    const back = new Slots(128);
    await receive(a, back, 128);
    for (let k = 0; k < 128; k++) {
      const p = back.packet(k);
      const i = (p[0] << 8) | p[1];
      expect(p).toEqual(payload(i));
      expect(back.get(k, "ADDR") >>> 0).toBe(B);
      expect(back.get(k, "PORT")).toBe(i % 2 ? b2.port : b1.port);
    }
  });

  it("counts datagrams that waited past the limit, and drops them at the head when asked, keeping the rest in order", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0, rcvbuf: 1 << 20 });
    b.enableTimestamps();
    // The kernel turns receive timestamps on a moment later (a deferred static key); datagrams that
    // arrive before are stamped when read, so they would never count as late.
    await new Promise((r) => setTimeout(r, 100));
    const sendAll = async (from: number, n: number) => {
      const out = new Slots(n);
      for (let k = 0; k < n; k++) {
        out.put(k, payload(from + k));
        out.set(k, { ADDR: B, PORT: b.port });
      }
      let sent = 0;
      await until(`${n} sent`, () => ((sent += a.send(out.buf, out.descs, sent, n - sent)) === n ? true : undefined));
    };
    const index = (s: Slots, k: number) => (s.packet(k)[0] << 8) | s.packet(k)[1];
    const queued = () => until("datagrams queued", () => (waitReadable([b.fd], -1, 0) ? true : undefined));
    // Old means waited 400 ms; fresh ones are read within the 200-ms limit even on a loaded machine.
    const LIMIT_US = 200_000;
    const age = () => new Promise((r) => setTimeout(r, 400));
    const s = new Slots(8);
    const recv = (maxAgeUs: number, drop: boolean) => {
      const r = b.recv(s.buf, s.descs, 0, 8, maxAgeUs, drop);
      return { kept: r & 0xffff, late: r >>> 16 };
    };

    // Counted but kept without `drop`.
    await sendAll(0, 2);
    await queued();
    await age();
    expect(recv(LIMIT_US, false)).toEqual({ kept: 2, late: 2 });
    expect([index(s, 0), index(s, 1)]).toEqual([0, 1]);

    // 5 old then 2 fresh with `drop`: the old ones go, the fresh stay in order, at the front.
    await sendAll(100, 5);
    await age();
    await sendAll(200, 2);
    s.reset();
    expect(recv(LIMIT_US, true)).toEqual({ kept: 2, late: 5 });
    expect([index(s, 0), index(s, 1)]).toEqual([200, 201]);
    expect(s.packet(1)).toEqual(payload(201));
    // Every slot is still owned by exactly one descriptor.
    expect(new Set(Array.from({ length: 8 }, (_, k) => s.get(k, "OFF"))).size).toBe(8);

    // No limit: nothing is late, however old.
    await sendAll(500, 2);
    await queued();
    await age();
    expect(recv(0, true)).toEqual({ kept: 2, late: 0 });
  });

  it("counts a late GRO receive's datagrams, the last one shorter, beside its count of receives", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const gro = open(nsB, { address: B, port: 0, gro: true, rcvbuf: 1 << 20 });
    gro.enableTimestamps();
    await new Promise((r) => setTimeout(r, 100)); // the kernel's timestamps start a moment later
    const out = new Slots(2);
    out.put(0, payload(3));
    out.set(0, { ADDR: B, PORT: gro.port });
    out.put(1, new Uint8Array(5 * 300 + 100).fill(9)); // 6 datagrams, the last of 100 bytes
    out.set(1, { ADDR: B, PORT: gro.port, FLAGS: 300 });
    expect(a.send(out.buf, out.descs, 0, 2)).toBe(2);
    await until("datagrams queued", () => (waitReadable([gro.fd], -1, 0) ? true : undefined));
    await new Promise((r) => setTimeout(r, 400));
    const s = new Slots(8);
    const r = gro.recv(s.buf, s.descs, 0, 8, 200_000, true);
    expect({ kept: r & 0xffff, late: r >>> 16, lateDatagrams: Math.floor(r / 2 ** 32) }).toEqual({
      kept: 0,
      late: 2,
      lateDatagrams: 7,
    });
  });

  it("shares a port between reusePort sockets and names the cause of failed binds", () => {
    const first = open(nsB, { address: B, port: 0 });
    open(nsB, { address: B, port: first.port });
    expect(() => open(nsB, { address: B, port: first.port, reusePort: false })).toThrow(
      expect.objectContaining({
        code: "EADDRINUSE",
        syscall: "bind",
        message: expect.stringMatching(/give every socket that shares it reusePort/),
      }),
    );
    expect(() => open(nsB, { address: "198.18.0.9", port: 0 })).toThrow(
      expect.objectContaining({
        code: "EADDRNOTAVAIL",
        message: expect.stringMatching(/no interface in this network namespace/),
      }),
    );
    expect(() => open(nsB, { address: "198.18.0.300", port: 0 })).toThrow(
      expect.objectContaining({ code: "NET_BAD_IPV4" }),
    );
  });

  it("splits a send by the segment size in FLAGS (GSO), and hands it over whole to a GRO socket", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const plain = open(nsB, { address: B, port: 0 });
    const gro = open(nsB, { address: B, port: 0, gro: true });
    const out = new Slots(2);
    const data = Uint8Array.from({ length: 4 * 300 }, (_, i) => (i / 300) | 0);
    for (const [i, port] of [plain.port, gro.port].entries()) {
      out.put(i, data);
      out.set(i, { ADDR: B, PORT: port, FLAGS: 300 });
    }
    expect(a.send(out.buf, out.descs, 0, 2)).toBe(2);

    const s = new Slots(8);
    await receive(plain, s, 4);
    for (let k = 0; k < 4; k++) {
      expect(s.packet(k)).toEqual(data.subarray(k * 300, (k + 1) * 300));
      expect(s.get(k, "FLAGS")).toBe(0);
    }
    s.reset();
    await receive(gro, s, 1);
    expect(s.packet(0)).toEqual(data);
    expect(s.get(0, "FLAGS")).toBe(300);
  });

  it("without gso, sends a segment size's datagrams one message each, whole descriptors per call", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0, rcvbuf: 1 << 20 });
    // Five descriptors of 64 datagrams of 100 bytes (the last of 40): 320 messages, one batch holds 256.
    const out = new Slots(5, 8192);
    const data = (i: number) => Uint8Array.from({ length: 63 * 100 + 40 }, (_, k) => (i * 64 + ((k / 100) | 0)) & 255);
    for (let i = 0; i < 5; i++) {
      out.put(i, data(i));
      out.set(i, { ADDR: B, PORT: b.port, FLAGS: 100 | (1 << native.DESC_FLOW_TAG_SHIFT) });
    }
    expect(native.udpSend(a.fd, out.buf, out.descs, 0, 5, true, false)).toBe(4);
    expect(native.udpSend(a.fd, out.buf, out.descs, 4, 1, true, false)).toBe(1);
    const s = new Slots(320);
    await receive(b, s, 320);
    for (let k = 0; k < 320; k++) {
      const [i, j] = [(k / 64) | 0, k % 64];
      expect(s.packet(k)).toEqual(data(i).subarray(j * 100, j * 100 + (j === 63 ? 40 : 100)));
      expect(s.get(k, "FLAGS")).toBe(0);
    }
  });

  /**
   * A batch to send: `sizes[i]` bytes for descriptor i, to `to[i]`, with flow tag `tags[i]` (default
   * 1: one flow); byte k of datagram i is (i * 7 + k) & 255.
   */
  function sendBatch(sizes: number[], to: UdpSocket[], tags: number[] = []): Slots {
    const out = new Slots(sizes.length);
    for (const [i, size] of sizes.entries()) {
      out.put(
        i,
        Uint8Array.from({ length: size }, (_, k) => (i * 7 + k) & 255),
      );
      out.set(i, { ADDR: B, PORT: to[i].port, FLAGS: (tags[i] ?? 1) << native.DESC_FLOW_TAG_SHIFT });
    }
    return out;
  }

  it("with trains, joins runs of single datagrams to one destination into GSO sends, the datagrams unchanged", async () => {
    const a = open(nsA, { address: A, port: 0 });
    a.trains = true;
    const gro = open(nsB, { address: B, port: 0, gro: true });
    const plain = open(nsB, { address: B, port: 0 });
    // Trains: [0..5] (five of 300, then a shorter last one) to gro; [6..8] to plain; [9..11] to gro
    // (400 is longer than 300, so a new train; 100 is its shorter last); [12] alone (a train ends
    // at a shorter datagram).
    const sizes = [300, 300, 300, 300, 300, 200, 300, 300, 300, 400, 400, 100, 500];
    const to = [gro, gro, gro, gro, gro, gro, plain, plain, plain, gro, gro, gro, gro];
    const out = sendBatch(sizes, to);
    expect(a.send(out.buf, out.descs, 0, sizes.length)).toBe(sizes.length);

    const s = new Slots(8);
    await receive(gro, s, 3);
    const joined = (ids: number[]) => Uint8Array.from(ids.flatMap((i) => Array.from(out.packet(i))));
    expect([0, 1, 2].map((k) => [s.get(k, "LEN"), s.get(k, "FLAGS")])).toEqual([
      [1700, 300],
      [900, 400],
      [500, 0],
    ]);
    expect(s.packet(0)).toEqual(joined([0, 1, 2, 3, 4, 5]));
    expect(s.packet(1)).toEqual(joined([9, 10, 11]));
    expect(s.packet(2)).toEqual(joined([12]));
    s.reset();
    await receive(plain, s, 3);
    for (let k = 0; k < 3; k++) {
      expect(s.packet(k)).toEqual(out.packet(6 + k));
      expect(s.get(k, "FLAGS")).toBe(0);
    }
  });

  it("with trains, joins only datagrams of one flow tag, and none without a tag", async () => {
    // The peer's reuseport program steers a train by its first datagram: one flow per train.
    const a = open(nsA, { address: A, port: 0 });
    a.trains = true;
    const gro = open(nsB, { address: B, port: 0, gro: true });
    const tags = [1, 1, 2, 2, 0x7fff, 0x7fff, 1, 0, 0];
    const out = sendBatch(Array(tags.length).fill(300), Array(tags.length).fill(gro), tags);
    expect(a.send(out.buf, out.descs, 0, tags.length)).toBe(tags.length);

    const s = new Slots(8);
    await receive(gro, s, 6);
    const joined = (ids: number[]) => Uint8Array.from(ids.flatMap((i) => Array.from(out.packet(i))));
    expect([0, 1, 2, 3, 4, 5].map((k) => [s.get(k, "LEN"), s.get(k, "FLAGS")])).toEqual([
      [600, 300],
      [600, 300],
      [600, 300],
      [300, 0],
      [300, 0],
      [300, 0],
    ]);
    expect(s.packet(0)).toEqual(joined([0, 1]));
    expect(s.packet(1)).toEqual(joined([2, 3]));
    expect(s.packet(2)).toEqual(joined([4, 5]));
    for (let k = 3; k < 6; k++) expect(s.packet(k)).toEqual(out.packet(k + 3));
  });

  it("with trains, keeps within 64 datagrams and 65,507 bytes per send, and sends what the MTU refuses as a train alone", async () => {
    const a = open(nsA, { address: A, port: 0, sndbuf: 1 << 20 });
    a.trains = true;
    const b = open(nsB, { address: B, port: 0, rcvbuf: 1 << 20 });
    // 70 of 1,000 bytes: trains of 64 and 6; 3 of 1,900 bytes, over the veth's MTU of 1,500: a
    // separate send fragments each, a train is refused (EINVAL), so they go one by one.
    const sizes = [...Array(70).fill(1000), 1900, 1900, 1900];
    const out = sendBatch(sizes, Array(sizes.length).fill(b));
    let sent = 0;
    let tooBig = 0;
    await until("all sent", () => {
      const r = a.send(out.buf, out.descs, sent, sizes.length - sent);
      if (r & native.UDP_SEND_GSO_TOO_BIG) tooBig++;
      return (sent += batchDone(r)) === sizes.length ? true : undefined;
    });
    expect(tooBig).toBe(1);
    const s = new Slots(sizes.length);
    await receive(b, s, sizes.length);
    for (let k = 0; k < sizes.length; k++) expect(s.packet(k)).toEqual(out.packet(k));
  });

  it("counts an unroutable packet as done and failed, with its errno, and sends the rest in the same call", async () => {
    // It threw (for the first message; a later one ended the batch and threw on the next call), so
    // a caller paid a call and an exception per refused datagram.
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0 });
    const s = new Slots(4);
    for (let i = 0; i < 4; i++) {
      s.put(i, payload(i));
      s.set(i, { ADDR: i === 2 ? parseIpv4("198.19.5.5") : B, PORT: b.port });
    }
    const r = a.send(s.buf, s.descs, 0, 4);
    expect([batchDone(r), batchFailed(r), batchErrno(r)]).toEqual([4, 1, constants.errno.ENETUNREACH]);
    expect(a.send(s.buf, s.descs, 2, 1)).toBe(
      1 + (1 << native.BATCH_FAILED_SHIFT) + constants.errno.ENETUNREACH * 2 ** 32,
    );
    const got = new Slots(4);
    await receive(b, got, 3);
    expect([0, 1, 2].map((k) => got.packet(k))).toEqual([0, 1, 3].map(payload));
  });

  it("ends a send batch before a bad descriptor after the first, sending the ones ahead of it, and throws for it next", async () => {
    // The worker skips a first descriptor that throws and calls again: a throw for descriptor 3
    // dropped 0..2 with it (and counted each as an error).
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0 });
    const s = new Slots(6);
    for (let i = 0; i < 6; i++) {
      s.put(i, payload(i));
      s.set(i, { ADDR: B, PORT: i === 3 ? 0 : b.port });
    }
    s.set(5, { OFF: s.buf.length - 10, LEN: 20 });
    expect(a.send(s.buf, s.descs, 0, 6)).toBe(3);
    expect(() => a.send(s.buf, s.descs, 3, 3)).toThrow(
      expect.objectContaining({ name: "RangeError", message: expect.stringMatching(/descriptor 3: PORT 0/) }),
    );
    expect(a.send(s.buf, s.descs, 4, 2)).toBe(1);
    expect(() => a.send(s.buf, s.descs, 5, 1)).toThrow(RangeError);
    const got = new Slots(8);
    await receive(b, got, 4);
    expect([0, 1, 2, 3].map((k) => got.packet(k))).toEqual([0, 1, 2, 4].map(payload));
  });

  it("sends a GSO descriptor and a train whose segments exceed the path MTU as separate datagrams", async () => {
    // A route's locked mtu (as a PMTU exception from an ICMP frag-needed would) below the segment
    // size: the kernel refuses the UDP_SEGMENT send (EMSGSIZE), while a separate send fragments.
    // The GSO descriptor was dropped whole, and a train went one datagram per call.
    const C = parseIpv4("198.18.0.3");
    await nsB.ip("addr add 198.18.0.3/32 dev vb");
    await nsA.ip("route add 198.18.0.3/32 dev va mtu lock 1000");
    const a = open(nsA, { address: A, port: 0 });
    a.trains = true;
    const b = open(nsB, { address: C, port: 0, rcvbuf: 1 << 20 });
    const out = new Slots(4, 8192);
    const data = Uint8Array.from({ length: 3 * 1200 + 500 }, (_, k) => ((k / 1200) | 0) + k);
    out.put(0, data);
    out.set(0, { ADDR: C, PORT: b.port, FLAGS: 1200 });
    for (let i = 1; i < 4; i++) {
      out.put(
        i,
        data.subarray(0, 1200).map((x) => x ^ i),
      );
      out.set(i, { ADDR: C, PORT: b.port, FLAGS: 1 << native.DESC_FLOW_TAG_SHIFT });
    }
    // Both in one call: a refused message goes again and the batch goes on, and the result says
    // so (it was silent: nothing counted it, and every batch to such a path paid the refusal).
    expect(a.send(out.buf, out.descs, 0, 4)).toBe(4 + native.UDP_SEND_GSO_TOO_BIG);
    expect(a.gsoRefused).toBe(false);
    const s = new Slots(7);
    await receive(b, s, 7);
    const cuts = [0, 1200, 2400, 3600, data.length];
    for (let k = 0; k < 4; k++) expect(s.packet(k)).toEqual(data.subarray(cuts[k], cuts[k + 1]));
    for (let k = 4; k < 7; k++) expect(s.packet(k)).toEqual(out.packet(k - 3));
  });

  it("sends a GSO descriptor whose segments exceed an IPv6 path's MTU (loopback's 65,536) as separate datagrams", async () => {
    const [tx, rx] = withNetns(nsA.name, () => [
      UdpSocket.open({ address: "::1", port: 0 }),
      UdpSocket.open({ address: "::1", port: 0, rcvbuf: 1 << 20 }),
    ]);
    sockets.push(tx, rx);
    // Segments of 65,500 bytes: with the IPv6 and UDP headers, more than lo's 65,536.
    const out = new Slots(1, 4 * 65536);
    const lo6 = out.get(0, "OFF") - native.HEADROOM;
    out.buf.set([...Array(15).fill(0), 1], lo6);
    const data = Uint8Array.from({ length: 65500 + 1000 }, (_, k) => k * 7);
    out.put(0, data);
    out.set(0, { ADDR: lo6, PORT: rx.port, FLAGS: 65500 | native.DESC_FLAG_ADDR6 });
    expect(tx.send(out.buf, out.descs, 0, 1)).toBe(1 + native.UDP_SEND_GSO_TOO_BIG);
    const s = new Slots(2, 65536 + native.HEADROOM);
    await receive(rx, s, 2);
    expect(s.packet(0)).toEqual(data.subarray(0, 65500));
    expect(s.packet(1)).toEqual(data.subarray(65500));
  });

  it("needs headroom in every receive slot, on an IPv6 socket too, and writes nothing before the buffer", async () => {
    // An IPv6 sender's address goes 64 bytes before OFF: with OFF 0 it went before the buffer.
    const [tx, rx] = withNetns(nsA.name, () => [
      UdpSocket.open({ address: "::1", port: 0 }),
      UdpSocket.open({ address: "::1", port: 0 }),
    ]);
    sockets.push(tx, rx);
    const out = new Slots(1);
    const lo6 = out.get(0, "OFF") - native.HEADROOM;
    out.buf.set([...Array(15).fill(0), 1], lo6);
    out.put(0, payload(9));
    out.set(0, { ADDR: lo6, PORT: rx.port, FLAGS: native.DESC_FLAG_ADDR6 });
    expect(tx.send(out.buf, out.descs, 0, 1)).toBe(1);
    await until("rx readable", () => (waitReadable([rx.fd], -1, 0) ? true : undefined));

    const s = new Slots(1);
    const view = s.buf.subarray(s.base + 64, s.base + 4096);
    s.buf.fill(0xee, s.base, s.base + 64);
    s.set(0, { OFF: 0, CAP: 2048 });
    expect(() => native.udpRecv(rx.fd, view, s.descs, 0, 1)).toThrow(
      expect.objectContaining({ name: "RangeError", message: expect.stringMatching(/needs OFF >= 64/) }),
    );
    expect(s.buf.subarray(s.base, s.base + 64).every((x) => x === 0xee)).toBe(true);
    s.set(0, { OFF: 64 });
    expect(native.udpRecv(rx.fd, view, s.descs, 0, 1)).toBe(1);
    expect(s.get(0, "FLAGS")).toBe(native.DESC_FLAG_ADDR6);
    expect(view.subarray(s.get(0, "ADDR"), s.get(0, "ADDR") + 16)).toEqual(out.buf.subarray(lo6, lo6 + 16));
  });

  it("ends a wait for a GSO refusal when the owner closes the socket, not when a borrower does", async () => {
    const sock = open(nsA, { address: "198.18.0.1", port: 0 });
    let settled: boolean | undefined;
    void sock.whenGsoRefused().then((refused) => (settled = refused));
    UdpSocket.borrow(sock.lend()).close();
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBeUndefined();
    sock.close();
    await until("the wait to end", () => (settled === undefined ? undefined : true));
    expect(settled).toBe(false);
    expect(sock.gsoRefused).toBe(false);
  });

  it("reports readiness through waitReadable", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0 });
    expect(waitReadable([a.fd, b.fd], -1, 0)).toBe(0);
    const s = new Slots(1);
    s.put(0, payload(1));
    s.set(0, { ADDR: B, PORT: b.port });
    expect(a.send(s.buf, s.descs, 0, 1)).toBe(1);
    await until("b readable", () => (waitReadable([a.fd, b.fd], -1, 0) === 0b10 ? true : undefined));
  });

  it("reads OFF as unsigned: slots above 2 GiB of a Wasm memory send and receive", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0 });
    // 2 GiB + 64 KiB of shared Wasm memory (address space only: untouched pages stay unbacked).
    const memory = new WebAssembly.Memory({ initial: 32769, maximum: 32769, shared: true });
    const buf = new Uint8Array(memory.buffer);
    const descs = new Int32Array(memory.buffer, 0, 2 * (native.DESC_BYTES >> 2));
    const out = 2 ** 31 + native.HEADROOM;
    const into = out + 4096;
    const p = payload(77);
    buf.set(p, out);
    const set = (i: number, fields: [number, number][]) => {
      for (const [at, value] of fields) descs[i * (native.DESC_BYTES >> 2) + (at >> 2)] = value;
    };
    set(0, [
      [native.DESC_OFF, out],
      [native.DESC_LEN, p.length],
      [native.DESC_ADDR, B],
      [native.DESC_PORT, b.port],
    ]);
    set(1, [
      [native.DESC_OFF, into],
      [native.DESC_CAP, 2048],
    ]);
    expect(a.send(buf, descs, 0, 1)).toBe(1);
    await until("datagram received", () => (b.recv(buf, descs, 1, 1) === 1 ? true : undefined));
    expect(descs[(native.DESC_BYTES >> 2) + (native.DESC_LEN >> 2)]).toBe(p.length);
    expect(buf.slice(into, into + p.length)).toEqual(p);
  });

  it("checks every argument before any syscall, leaving queued data alone", async () => {
    const a = open(nsA, { address: A, port: 0 });
    const b = open(nsB, { address: B, port: 0 });
    const s = new Slots(4);
    s.put(0, payload(5));
    s.set(0, { ADDR: B, PORT: b.port });
    expect(a.send(s.buf, s.descs, 0, 1)).toBe(1);
    await until("b readable", () => (waitReadable([b.fd], -1, 0) ? true : undefined));

    s.reset();
    const bad: [string, () => unknown, ErrorConstructor][] = [
      [
        "buf not a Uint8Array",
        () => b.recv(new Int32Array(s.memory.buffer) as unknown as Uint8Array, s.descs, 0, 1),
        TypeError,
      ],
      [
        "descs not an Int32Array",
        () => b.recv(s.buf, new Uint32Array(s.memory.buffer, 0, 32) as unknown as Int32Array, 0, 1),
        TypeError,
      ],
      ["count not an integer", () => b.recv(s.buf, s.descs, 0, 1.5), TypeError],
      ["count a string", () => native.udpRecv(b.fd, s.buf, s.descs, 0, "1" as unknown as number), TypeError],
      ["count over MAX_BATCH", () => native.udpRecv(b.fd, s.buf, s.descs, 0, 257), RangeError],
      ["first negative", () => b.recv(s.buf, s.descs, -1, 1), RangeError],
      ["descriptors past descs' end", () => b.recv(s.buf, s.descs, 3, 2), RangeError],
      ["slot past the buffer end", () => b.recv(s.buf.subarray(0, s.get(1, "OFF") + 100), s.descs, 0, 2), RangeError],
      ["negative OFF", () => (s.set(0, { OFF: -4 }), b.recv(s.buf, s.descs, 0, 1)), RangeError],
      ["zero CAP", () => (s.reset(), s.set(0, { CAP: 0 }), b.recv(s.buf, s.descs, 0, 1)), RangeError],
      [
        "send PORT 0",
        () => (s.reset(), s.set(0, { LEN: 10, ADDR: B, PORT: 0 }), a.send(s.buf, s.descs, 0, 1)),
        RangeError,
      ],
      ["fd negative", () => native.udpRecv(-1, s.buf, s.descs, 0, 1), RangeError],
      ["fd not a number", () => native.udpRecv(null as unknown as number, s.buf, s.descs, 0, 1), TypeError],
    ];
    for (const [what, call, type] of bad) expect(call, what).toThrow(type);

    // The datagram is still queued: no call above reached recvmmsg.
    s.reset();
    expect(b.recv(s.buf, s.descs, 0, 4)).toBe(1);
    expect(s.packet(0)).toEqual(payload(5));
  });
});
