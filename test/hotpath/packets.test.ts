// Differential tests: the Wasm send and receive paths against the plain reference in
// test/reference/packets.ts, on random batches of well-formed, damaged and garbage packets.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PacketBatch } from "../../src/hotpath/batch.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { buildIpv4, buildVxlan } from "../reference/build.js";
import { internetChecksum } from "../reference/checksum.js";
import { ReferenceRouteTable } from "../reference/lpm.js";
import {
  refSend,
  refUdpReceive,
  refVxlanReceive,
  type NextHop,
  type SendResult,
  type ReceiveResult,
} from "../reference/packets.js";
import { ICMP_TICKS } from "../support/arbitraries.js";
import { decapInPlace, encapInPlace, icmpClock, loadBatch, makeRig, readBatch, type Rig } from "../support/hotpath.js";

const VNI = 1;
const OUR_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x01, 0x00]);
const BROADCAST = new Uint8Array(6).fill(0xff);

// Routes of a small cluster: two peers, one covering /16 fallback, one route whose next hop is gone.
const ROUTES: Array<[string, number]> = [
  ["198.19.2.0/24", 1],
  ["198.19.3.0/24", 2],
  ["198.19.3.128/25", 3],
  ["198.19.0.0/16", 4],
];
const NEXT_HOPS = new Map<number, NextHop>([
  [1, { ip: 0xc6120002, port: 8472, mac: Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x02, 0x00]), valid: true }],
  [2, { ip: 0xc6120003, port: 8472, mac: Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x03, 0x00]), valid: true }],
  [3, { ip: 0xc6120004, port: 8285, mac: Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x03, 0x80]), valid: false }],
  [4, { ip: 0xc6120005, port: 9999, mac: Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x00, 0x00]), valid: true }],
]);

function setupRig(antiSpoof = false): Rig {
  const rig = makeRig({ vni: VNI, mac: OUR_MAC, antiSpoof });
  for (const [i, nh] of NEXT_HOPS) if (nh.valid) rig.routes.setNextHop(i, nh);
  for (const [p, nh] of ROUTES) rig.routes.insert(parsePrefix(p), nh);
  return rig;
}

const reference = new ReferenceRouteTable({ tbl8Groups: 64, maxRules: 1024, maxNextHops: 256 });
for (const [p, nh] of ROUTES) reference.insert(parsePrefix(p).addr, parsePrefix(p).len, nh);
const refLookup = (addr: number) => reference.lookup(addr);
const underlays = [...NEXT_HOPS.values()].map((nh) => nh.ip);
const sourceCheck = (from: number) => ({ from, lookup: refLookup, nextHop: (i: number) => NEXT_HOPS.get(i) });
const sendCtx = {
  vni: VNI,
  mac: OUR_MAC,
  lookup: refLookup,
  nextHop: (i: number) => NEXT_HOPS.get(i),
};

// ---- generators ----
const addr = fc.oneof(
  fc.constantFrom(0xc6130201, 0xc61302ff, 0xc6130301, 0xc6130381, 0xc61304aa, 0xc6120009),
  // no single host: 0.0.0.0, multicast, class E, broadcast
  fc.constantFrom(0, 0xe0000001, 0xefffffff, 0xf0000001, 0xffffffff),
  fc.integer({ min: 0xc6120000, max: 0xc613ffff }),
);
const ipv4 = fc
  .record({
    src: addr,
    dst: addr,
    protocol: fc.oneof(fc.constantFrom(1, 6, 17), fc.integer({ min: 0, max: 255 })),
    ttl: fc.oneof(fc.constantFrom(0, 1, 2, 64, 255), fc.integer({ min: 0, max: 255 })),
    id: fc.integer({ min: 0, max: 0xffff }),
    fragment: fc.oneof(fc.constantFrom(0, 0x4000, 0x2000, 0x0001), fc.integer({ min: 0, max: 0xffff })),
    options: fc.integer({ min: 0, max: 10 }).chain((n) => fc.uint8Array({ minLength: n * 4, maxLength: n * 4 })),
    payload: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 1400 })),
  })
  .map(buildIpv4);
const ipv6 = fc
  .record({
    payloadLen: fc.integer({ min: 0, max: 300 }),
    extra: fc.integer({ min: -20, max: 20 }),
    hop: fc.constantFrom(0, 1, 64),
  })
  .map(({ payloadLen, extra, hop }) => {
    const p = new Uint8Array(Math.max(0, 40 + payloadLen + extra));
    p.set([0x60, 0, 0, 0, payloadLen >> 8, payloadLen & 255, 17, hop].slice(0, p.length));
    return p;
  });

/** Damage: none, truncation, a changed byte anywhere, in the first 24 bytes, the IHL, trailing padding. */
function damaged(packet: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(packet, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 6 }))
    .map(([p, a, b, v, kind]) => {
      if (kind === 1) return p.slice(0, a % (p.length + 1));
      if ((kind === 2 || kind === 4) && p.length > 0) {
        const q = p.slice();
        q[a % (kind === 4 ? Math.min(24, q.length) : q.length)] = v;
        return q;
      }
      if (kind === 3) return Uint8Array.from([...p, ...new Uint8Array(b % 40)]);
      if (kind === 5 && p.length > 0) return Uint8Array.from([(p[0] & 0xf0) | (v & 0x0f), ...p.subarray(1)]); // IHL
      return p;
    });
}
const garbage = fc.uint8Array({ maxLength: 1500 });
const tunPacket = fc.oneof(
  { arbitrary: damaged(ipv4), weight: 6 },
  { arbitrary: ipv6, weight: 1 },
  { arbitrary: garbage, weight: 1 },
);
const vxlanFrame = fc
  .record({
    vni: fc.oneof(
      { arbitrary: fc.constant(VNI), weight: 6 },
      { arbitrary: fc.integer({ min: 0, max: 0xffffff }), weight: 1 },
    ),
    flags: fc.oneof(
      { arbitrary: fc.constant(0x08), weight: 6 },
      { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 },
    ),
    dst: fc.oneof(
      { arbitrary: fc.constant(OUR_MAC), weight: 6 },
      { arbitrary: fc.constant(BROADCAST), weight: 1 },
      { arbitrary: fc.uint8Array({ minLength: 6, maxLength: 6 }), weight: 1 },
    ),
    ethertype: fc.oneof(
      { arbitrary: fc.constant(0x0800), weight: 6 },
      { arbitrary: fc.constantFrom(0x86dd, 0x0806), weight: 2 },
      { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 },
    ),
    inner: fc.oneof({ arbitrary: damaged(ipv4), weight: 4 }, { arbitrary: ipv6, weight: 1 }),
  })
  .map((f) => buildVxlan(f.vni, f.dst, OUR_MAC, f.ethertype, f.inner, f.flags));
const received = (frame: fc.Arbitrary<Uint8Array>) =>
  fc.oneof({ arbitrary: damaged(frame), weight: 6 }, { arbitrary: garbage, weight: 1 });
const batchOf = <T>(p: fc.Arbitrary<T>) => fc.array(p, { minLength: 1, maxLength: 64 });
/** Read batches, and now and then a flood to an unrouted address (198.18.0.x) that drains the ICMP error bucket. */
const unrouted = fc
  .record({ dst: fc.integer({ min: 0xc6120000, max: 0xc61200ff }), payload: fc.uint8Array({ maxLength: 64 }) })
  .map(({ dst, payload }) => buildIpv4({ src: 0xc6130201, dst, payload }));
const tunBatch = fc.oneof(
  { arbitrary: batchOf(tunPacket), weight: 4 },
  { arbitrary: fc.array(unrouted, { minLength: 20, maxLength: 64 }), weight: 1 },
);
// ---- comparison ----
type Ref = SendResult | ReceiveResult;

/** Runs one hot-path batch call and checks every descriptor, the grouping and the counters. */
function compare(
  rig: Rig,
  packets: Uint8Array[],
  call: (n: number) => number,
  refs: Ref[],
  counters: () => Record<string, bigint>,
  from?: number[],
) {
  const before = counters();
  const peersBefore = [...NEXT_HOPS.keys()].map((i) => rig.ctx.peer(i));
  loadBatch(rig, packets, from);
  const ret = call(packets.length);
  const fwd = ret & 0xffff;
  const replies = ret >>> 16;
  const results = readBatch(rig, packets.length);
  const order = (v: string) => (v === "FORWARD" ? 0 : v === "REPLY" ? 1 : 2);
  expect(results.map((r) => r.slot).sort((a, b) => a - b)).toEqual(packets.map((_, i) => i));
  expect(fwd).toBe(refs.filter((r) => r.verdict === "FORWARD").length);
  expect(replies).toBe(refs.filter((r) => r.verdict === "REPLY").length);
  results.forEach((r, i) => {
    const ref = refs[r.slot];
    expect({ slot: r.slot, verdict: r.verdict }).toEqual({ slot: r.slot, verdict: ref.verdict });
    expect(order(r.verdict)).toBe(i < fwd ? 0 : i < fwd + replies ? 1 : 2);
    if (ref.out) expect(Buffer.from(r.bytes).toString("hex")).toBe(Buffer.from(ref.out).toString("hex"));
    if ("addr" in ref && ref.verdict === "FORWARD") expect([r.addr, r.port]).toEqual([ref.addr, ref.port]);
    if ("peer" in ref && ref.peer !== undefined) expect(r.aux).toBe(ref.peer);
  });
  // Per-peer counters: every forwarded packet counted once for the peer it went to or came from.
  const dir = "addr" in (refs[0] ?? {}) || refs.some((r) => "addr" in r) ? "tx" : "rx";
  [...NEXT_HOPS.keys()].forEach((i, k) => {
    const mine = refs.filter((r) => r.verdict === "FORWARD" && peerOf(r) === i);
    const now = rig.ctx.peer(i)[dir];
    expect(now.packets - peersBefore[k][dir].packets).toBe(BigInt(mine.length));
    expect(now.bytes - peersBefore[k][dir].bytes).toBe(BigInt(mine.reduce((n, r) => n + r.out!.length, 0)));
  });
  // Forwarded packets keep their order.
  const fwdSlots = results.slice(0, fwd).map((r) => r.slot);
  expect(fwdSlots).toEqual([...fwdSlots].sort((a, b) => a - b));
  const after = counters();
  for (const [name, n] of Object.entries(after)) {
    expect({ name, n: n - before[name] }).toEqual({ name, n: BigInt(refs.filter((r) => r.verdict === name).length) });
  }
}

/** The generators must reach the interesting outcomes, or the comparison proves little. */
function expectSeen(rig: Rig, verdicts: string[]): void {
  const rx = rig.ctx.rx().packets;
  const tx = rig.ctx.tx().packets;
  for (const v of verdicts) expect({ v, seen: rx[v] + tx[v] > 0n }).toEqual({ v, seen: true });
}

/** The next hop a reference result was sent to (send path) or received from (checked receive path). */
function peerOf(r: Ref): number | undefined {
  if ("peer" in r) return r.peer;
  if ("addr" in r && r.addr !== undefined)
    return [...NEXT_HOPS].find(([, nh]) => nh.ip === r.addr && nh.port === r.port)?.[0];
  return undefined;
}

describe("send path (TUN to socket)", () => {
  const rig = setupRig();
  const clock = icmpClock(rig);
  it("encapBatch (vxlan, single segments) equals the reference", () => {
    fc.assert(
      fc.property(tunBatch, ICMP_TICKS, (packets, ms) => {
        const refs = clock.limit(
          packets.map((p) => refSend(p, sendCtx, "vxlan")),
          ms,
        );
        compare(
          rig,
          packets,
          (n) => encapInPlace(rig, "vxlan", n),
          refs,
          () => rig.ctx.tx().packets,
        );
      }),
      { numRuns: 300 },
    );
    expectSeen(rig, [
      "FORWARD",
      "REPLY",
      "NO_ROUTE",
      "NO_NEXT_HOP",
      "IPV6_UNROUTED",
      "TOO_SHORT",
      "IP_LENGTH",
      "IPV4_IHL",
      "IP_VERSION",
      "ICMP_RATE_LIMITED",
    ]);
  });

  it("encapBatch (udp, single segments) equals the reference (TTL decrement, ICMP net unreachable)", () => {
    fc.assert(
      fc.property(tunBatch, ICMP_TICKS, (packets, ms) => {
        const refs = clock.limit(
          packets.map((p) => refSend(p, sendCtx, "udp")),
          ms,
        );
        compare(
          rig,
          packets,
          (n) => encapInPlace(rig, "udp", n),
          refs,
          () => rig.ctx.tx().packets,
        );
      }),
      { numRuns: 300 },
    );
  });

  it("keeps header checksums valid through the TTL decrement and writes valid ICMP errors from the offender's destination", () => {
    fc.assert(
      fc.property(batchOf(ipv4), (packets) => {
        clock.advance(1000); // a full bucket: every error is written
        loadBatch(rig, packets);
        const ret = encapInPlace(rig, "udp", packets.length);
        const n = (ret & 0xffff) + (ret >>> 16);
        for (const r of readBatch(rig, n)) {
          const ihl = (r.bytes[0] & 15) * 4;
          expect(internetChecksum(r.bytes.subarray(0, ihl))).toBe(0);
          if (r.verdict !== "REPLY") continue;
          expect(internetChecksum(r.bytes.subarray(20))).toBe(0);
          // From the offender's destination (quoted at 28): never one of the host's own addresses,
          // which the kernel would drop as a martian source.
          expect(r.bytes.subarray(12, 16)).toEqual(r.bytes.subarray(44, 48));
        }
      }),
      { numRuns: 100 },
    );
  });
});

describe("ICMP errors about packets to or from no single host", () => {
  it("sends none about a multicast or broadcast destination, or from 0.0.0.0 or a multicast source (RFC 1122 3.2.2)", () => {
    const rig = setupRig();
    icmpClock(rig).advance(1000); // a full bucket: the rate limit withholds nothing
    const unrouted = 0x0a000001; // 10.0.0.1: no route
    const pod = 0xc6130105;
    const cases = [
      [pod, unrouted, "REPLY"],
      [pod, 0xe0000001, "NO_ROUTE"],
      [pod, 0xefffffff, "NO_ROUTE"],
      [pod, 0xf0000001, "NO_ROUTE"],
      [pod, 0xffffffff, "NO_ROUTE"],
      [0, unrouted, "NO_ROUTE"],
      [0xe0000005, unrouted, "NO_ROUTE"],
    ] as const;
    const packets = cases.map(([src, dst]) => buildIpv4({ src, dst, protocol: 17, payload: new Uint8Array(16) }));
    loadBatch(rig, packets);
    const ret = encapInPlace(rig, "vxlan", packets.length);
    expect(ret).toBe(1 << 16);
    const [reply] = readBatch(rig, 1);
    expect(reply.verdict).toBe("REPLY");
    expect(rig.ctx.tx().packets.NO_ROUTE).toBe(BigInt(cases.length - 1));
  });
});

describe("receive path (socket to TUN)", () => {
  const rig = setupRig();
  it("decapBatch (vxlan, single segments) equals the reference on VXLAN frames, damaged frames and garbage", () => {
    fc.assert(
      fc.property(batchOf(received(vxlanFrame)), (frames) => {
        const refs = frames.map((f) => refVxlanReceive(f, VNI, OUR_MAC));
        compare(
          rig,
          frames,
          (n) => decapInPlace(rig, "vxlan", n),
          refs,
          () => rig.ctx.rx().packets,
        );
      }),
      { numRuns: 300 },
    );
    expectSeen(rig, [
      "FORWARD",
      "TOO_SHORT",
      "VXLAN_FLAGS",
      "VXLAN_VNI",
      "NOT_OUR_MAC",
      "ARP_BROADCAST",
      "ETHERTYPE",
      "IP_VERSION",
      "IP_LENGTH",
      "IPV4_CHECKSUM",
      "TTL_EXHAUSTED",
    ]);
  });

  it("decapBatch (udp, single segments) equals the reference on packets, damaged packets and garbage", () => {
    fc.assert(
      fc.property(batchOf(received(ipv4)), (payloads) => {
        const refs = payloads.map((p) => refUdpReceive(p));
        compare(
          rig,
          payloads,
          (n) => decapInPlace(rig, "udp", n),
          refs,
          () => rig.ctx.rx().packets,
        );
      }),
      { numRuns: 300 },
    );
  });

  it("with anti-spoofing, accepts only inner sources in the sending peer's subnet (vxlan)", () => {
    const checked = setupRig(true);
    const from = fc.oneof(fc.constantFrom(...underlays), fc.integer({ min: 0xc6120000, max: 0xc61200ff }));
    fc.assert(
      fc.property(batchOf(fc.tuple(received(vxlanFrame), from)), (batch) => {
        const frames = batch.map(([f]) => f);
        const froms = batch.map(([, a]) => a);
        const refs = batch.map(([f, a]) => refVxlanReceive(f, VNI, OUR_MAC, sourceCheck(a)));
        compare(
          checked,
          frames,
          (n) => decapInPlace(checked, "vxlan", n),
          refs,
          () => checked.ctx.rx().packets,
          froms,
        );
      }),
      { numRuns: 200 },
    );
    expectSeen(checked, ["FORWARD", "SPOOFED", "UNKNOWN_SOURCE"]);
  });

  it("with anti-spoofing, accepts only inner sources in the sending peer's subnet (udp)", () => {
    const checked = setupRig(true);
    const from = fc.oneof(fc.constantFrom(...underlays), fc.integer({ min: 0xc6120000, max: 0xc61200ff }));
    fc.assert(
      fc.property(batchOf(fc.tuple(received(ipv4), from)), (batch) => {
        const payloads = batch.map(([p]) => p);
        const refs = batch.map(([p, a]) => refUdpReceive(p, sourceCheck(a)));
        compare(
          checked,
          payloads,
          (n) => decapInPlace(checked, "udp", n),
          refs,
          () => checked.ctx.rx().packets,
          batch.map(([, a]) => a),
        );
      }),
      { numRuns: 200 },
    );
    expectSeen(checked, ["FORWARD", "SPOOFED", "UNKNOWN_SOURCE", "TTL_EXHAUSTED"]);
  });

  it("decapsulates what it encapsulated for the peer", () => {
    const peer = makeRig({ vni: VNI, mac: NEXT_HOPS.get(1)!.mac });
    fc.assert(
      fc.property(
        batchOf(
          ipv4.filter((p) => refLookup(((p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19]) >>> 0) === 1 && p[8] > 0),
        ),
        (packets) => {
          loadBatch(rig, packets);
          const fwd = encapInPlace(rig, "vxlan", packets.length) & 0xffff;
          const frames = readBatch(rig, fwd).map((r) => r.bytes);
          loadBatch(peer, frames);
          expect(decapInPlace(peer, "vxlan", frames.length)).toBe(packets.length);
          expect(readBatch(peer, packets.length).map((r) => Buffer.from(r.bytes).toString("hex"))).toEqual(
            packets.map((p) => Buffer.from(p).toString("hex")),
          );
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe("descriptors the caller got wrong", () => {
  it("drops a packet whose descriptor points past memory or lacks headroom instead of writing there", () => {
    const rig = setupRig();
    const good = buildIpv4({ src: 0xc6130101, dst: 0xc6130201, payload: new Uint8Array(10) });
    loadBatch(rig, [good, good, good]);
    const d = rig.batch.descView();
    d[0] = rig.hp.memory.buffer.byteLength - 4; // OFF near the end, LEN beyond it
    d[8] = 10; // OFF inside the first 64 bytes: no headroom
    const ret = encapInPlace(rig, "vxlan", 3);
    expect(ret).toBe(1);
    expect(rig.ctx.tx().packets.BAD_DESCRIPTOR).toBe(2n);
  });

  it("forwards from slots at 2 GiB and beyond: offsets reach 2^32, so they are unsigned", () => {
    const rig = setupRig();
    // Memory past 2 GiB (the pages are not touched but where the packet goes), then a batch there.
    rig.arena.alloc(2 ** 31);
    const batch = new PacketBatch(rig.hp, rig.arena, 1, 2048);
    expect(batch.slots).toBeGreaterThanOrEqual(2 ** 31);
    batch.reset();
    const d = new Uint32Array(rig.hp.memory.buffer, batch.descs, 8);
    const packet = buildIpv4({ src: 0xc6130101, dst: 0xc6130201, payload: new Uint8Array(10) });
    rig.hp.bytes().set(packet, d[0]);
    d[2] = packet.length;
    const ret = rig.hp.fn.encapBatch(rig.ctx.ptr, batch.descs, 1, rig.hp.wireFormat("vxlan"), 0, batch.descs, 0, 0);
    expect(rig.ctx.tx().packets.BAD_DESCRIPTOR).toBe(0n);
    expect(ret).toBe(1);
    expect(rig.hp.bytes().slice(d[0] + 22, d[0] + d[2])).toEqual(packet);
  });
});
