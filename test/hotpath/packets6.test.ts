// Differential tests of the IPv6 VXLAN paths: the Wasm send path (IPv6 route table, VXLAN with
// the IPv6 ethertype, next hops on IPv6 and IPv4 underlays, ICMPv6 errors) and the receive path
// with IPv6 anti-spoofing, against test/reference/packets6.ts on random batches.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseIpv6, parsePrefix6, readIpv6, writeIpv6 } from "../../src/net/ipv6.js";
import { DataplaneContext } from "../../src/hotpath/context.js";
import { buildIpv4, buildVxlan } from "../reference/build.js";
import { ReferenceRouteTable6 } from "../reference/lpm6.js";
import { refVxlanReceive } from "../reference/packets.js";
import { addrBytes, refSend6, refSourceCheck6, type NextHop6, type SendResult6 } from "../reference/packets6.js";
import { ICMP_TICKS } from "../support/arbitraries.js";
import { decapInPlace, encapInPlace, icmpClock, loadBatch, makeRig, readBatch, type Rig } from "../support/hotpath.js";

const VNI = 1;
const OUR_MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x01]);
const LOCAL6 = parseIpv6("2001:2:0:8001::");
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const ROUTES: Array<[string, number]> = [
  ["2001:2:0:8002::/64", 1],
  ["2001:2:0:8003::/64", 2],
  ["2001:2:0:8003:8000::/65", 3],
  ["2001:2:0:8000::/49", 4],
];
const NEXT_HOPS = new Map<number, NextHop6>([
  [
    1,
    { ip: parseIpv6("2001:2::2"), port: 8472, mac: Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x02]), valid: true },
  ],
  [
    2,
    {
      ip: parseIpv6("::ffff:198.18.0.3"),
      port: 8472,
      mac: Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x03]),
      valid: true,
    },
  ],
  [
    3,
    {
      ip: parseIpv6("2001:2::4"),
      port: 8472,
      mac: Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x04]),
      valid: false,
    },
  ],
  [
    4,
    { ip: parseIpv6("2001:2::5"), port: 9999, mac: Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x05]), valid: true },
  ],
]);

function setupRig(antiSpoof = false): Rig {
  const rig = makeRig({ vni: VNI, mac: OUR_MAC, antiSpoof, ipv6: { localAddr: LOCAL6 } });
  for (const [i, nh] of NEXT_HOPS) if (nh.valid) rig.routes6!.setNextHop(i, nh);
  for (const [p, nh] of ROUTES) rig.routes6!.insert(parsePrefix6(p), nh);
  return rig;
}

const reference = new ReferenceRouteTable6({ maxRules: 1024, maxNextHops: 256 });
for (const [p, nh] of ROUTES) reference.insert(parsePrefix6(p).addr, parsePrefix6(p).len, nh);
const lookup = (a: bigint) => reference.lookup(a);
const nextHop = (i: number) => NEXT_HOPS.get(i);
const sendCtx = { vni: VNI, localAddr: LOCAL6, mac: OUR_MAC, lookup, nextHop };

// ---- generators ----
const addr6 = fc.oneof(
  fc
    .constantFrom(
      "2001:2:0:8002::5",
      "2001:2:0:8003::9",
      "2001:2:0:8003:8000::1",
      "2001:2:0:8010::1",
      "2001:2:0:8001::7",
      "2001:2:0:7fff::1",
      "ff02::2",
      "::",
      "fe80::1",
    )
    .map(parseIpv6),
  fc
    .tuple(fc.integer({ min: 0, max: 0x7fff }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }))
    .map(([s, low]) => parseIpv6("2001:2:0:8000::") | (BigInt(s) << 64n) | low),
);
/** An extension header to put in front of the upper layer: its type and its size or fragment offset. */
type Extension = { type: 0 | 43 | 60; units: number } | { type: 51; units: number } | { type: 44; offset: number };

/** The chain of extension headers (each naming the next), then `upper` (its number) with `payload`. */
function withExtensions(exts: Extension[], upper: number, payload: Uint8Array): { next: number; body: Uint8Array } {
  const headers = exts.map((e, i) => {
    const next = i + 1 < exts.length ? exts[i + 1].type : upper;
    if (e.type === 44) return Uint8Array.from([next, 0, e.offset >> 5, ((e.offset << 3) & 255) | 1, 0, 0, 0, 7]);
    const h = new Uint8Array(e.type === 51 ? (e.units + 2) * 4 : (e.units + 1) * 8);
    h.set([next, e.units]);
    return h;
  });
  return { next: exts.length > 0 ? exts[0].type : upper, body: Buffer.concat([...headers, payload]) };
}

/** An IPv6 packet whose payload length is the body's. */
function ipv6(src: bigint, dst: bigint, next: number, body: Uint8Array, hop = 64): Uint8Array {
  const p = new Uint8Array(40 + body.length);
  p.set([0x60, 0, 0, 0, body.length >> 8, body.length & 255, next, hop]);
  p.set(addrBytes(src), 8);
  p.set(addrBytes(dst), 24);
  p.set(body, 40);
  return p;
}

const extension: fc.Arbitrary<Extension> = fc.oneof(
  fc.record({ type: fc.constantFrom(0 as const, 43 as const, 60 as const), units: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ type: fc.constant(51 as const), units: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ type: fc.constant(44 as const), offset: fc.constantFrom(0, 0, 1, 185) }),
);
const ipv6Packet = fc
  .record({
    src: addr6,
    dst: addr6,
    exts: fc.oneof(
      { arbitrary: fc.constant<Extension[]>([]), weight: 2 },
      { arbitrary: fc.array(extension, { maxLength: 3 }), weight: 1 },
    ),
    next: fc.oneof(fc.constantFrom(6, 17, 58), fc.integer({ min: 0, max: 255 })),
    icmpType: fc.constantFrom(1, 3, 128, 129, 133, 137),
    hop: fc.constantFrom(0, 1, 64, 255),
    payload: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 1400 })),
    // A consistent packet cut short (its extension headers too, as its payload length says).
    cut: fc.option(fc.nat({ max: 48 }), { freq: 6 }),
    extra: fc.oneof(
      { arbitrary: fc.constant(0), weight: 5 },
      { arbitrary: fc.integer({ min: -50, max: 30 }), weight: 1 },
    ),
  })
  .map(({ src, dst, exts, next, icmpType, hop, payload, cut, extra }) => {
    const upper = payload.slice();
    if (next === 58 && upper.length > 0) upper[0] = icmpType;
    const chain = withExtensions(exts, next, upper);
    const body = cut === null ? chain.body : chain.body.subarray(0, cut);
    const full = ipv6(src, dst, chain.next, body, hop);
    const plen = Math.max(0, body.length + Math.max(extra, 0));
    full.set([plen >> 8, plen & 255], 4);
    return full.slice(0, Math.max(1, full.length + Math.min(extra, 0)));
  });
const batchOf = (p: fc.Arbitrary<Uint8Array>) => fc.array(p, { minLength: 1, maxLength: 64 });
/** Read batches, and now and then a flood to an unrouted address that drains the ICMP error bucket. */
const unrouted = fc
  .uint8Array({ maxLength: 64 })
  .map((payload) => ipv6(LOCAL6 | 5n, parseIpv6("2001:2:0:7fff::1"), 17, payload));
const tunBatch = fc.oneof(
  { arbitrary: batchOf(ipv6Packet), weight: 4 },
  { arbitrary: fc.array(unrouted, { minLength: 20, maxLength: 64 }), weight: 1 },
);

/** The descriptors' FLAGS, in descriptor order. */
const flagsOf = (rig: Rig, n: number) => {
  const d = rig.batch.descView();
  const stride = rig.hp.constant("DESC_BYTES") >> 2;
  return Array.from({ length: n }, (_, i) => d[i * stride + (rig.hp.constant("DESC_FLAGS") >> 2)]);
};

describe("IPv6 send path (TUN to socket)", () => {
  const rig = setupRig();
  const clock = icmpClock(rig);
  const addr6Flag = rig.hp.constant("DESC_FLAG_ADDR6");

  it("encapBatch (vxlan, single segments) equals the reference: frames, underlay of either family, ICMPv6 errors, rate limit, counters", () => {
    fc.assert(
      fc.property(tunBatch, ICMP_TICKS, (packets, ms) => {
        const refs: SendResult6[] = clock.limit(
          packets.map((p) => refSend6(p, sendCtx)),
          ms,
        );
        const before = rig.ctx.tx().packets;
        loadBatch(rig, packets);
        const ret = encapInPlace(rig, "vxlan", packets.length);
        const fwd = ret & 0xffff;
        expect(fwd).toBe(refs.filter((r) => r.verdict === "FORWARD").length);
        expect(ret >>> 16).toBe(refs.filter((r) => r.verdict === "REPLY").length);
        const results = readBatch(rig, packets.length);
        const flags = flagsOf(rig, packets.length);
        results.forEach((r, i) => {
          const ref = refs[r.slot];
          expect({ slot: r.slot, verdict: r.verdict }).toEqual({ slot: r.slot, verdict: ref.verdict });
          if (ref.out) expect(hex(r.bytes)).toBe(hex(ref.out));
          if (ref.verdict !== "FORWARD") return;
          expect(i).toBeLessThan(fwd);
          expect([r.port, r.aux]).toEqual([ref.port, ref.peer]);
          if (ref.addr6 !== undefined) {
            expect(flags[i] & addr6Flag).toBe(addr6Flag);
            expect(readIpv6(rig.hp.bytes(), r.addr)).toBe(ref.addr6); // ADDR points at a copy of the next hop's address
          } else {
            expect(flags[i] & addr6Flag).toBe(0);
            expect(r.addr).toBe(ref.addr);
          }
        });
        const after = rig.ctx.tx().packets;
        for (const name of new Set(refs.map((r) => r.verdict))) {
          expect({ name, n: after[name] - before[name] }).toEqual({
            name,
            n: BigInt(refs.filter((r) => r.verdict === name).length),
          });
        }
      }),
      { numRuns: 150 },
    );
    const seen = rig.ctx.tx().packets;
    for (const v of [
      "FORWARD",
      "REPLY",
      "NO_ROUTE",
      "NO_NEXT_HOP",
      "TOO_SHORT",
      "IP_LENGTH",
      "TTL_EXHAUSTED",
      "ICMP_RATE_LIMITED",
    ]) {
      expect({ v, seen: seen[v] > 0n }).toEqual({ v, seen: true });
    }
  });

  it("drops IPv6 as before when the context has no IPv6 table", () => {
    const v4only = makeRig({ vni: VNI, mac: OUR_MAC });
    const pkt = new Uint8Array(48);
    pkt.set([0x60, 0, 0, 0, 0, 8, 17, 64]);
    loadBatch(v4only, [pkt]);
    expect(encapInPlace(v4only, "vxlan", 1)).toBe(0);
    expect(readBatch(v4only, 1)[0].verdict).toBe("IPV6_UNROUTED");
  });
});

describe("ICMPv6 errors about packets with extension headers (RFC 4443 2.4 e)", () => {
  const rig = setupRig();
  const unrouted = parseIpv6("2001:2:0:7fff::1");
  const icmp = (type: number) => Uint8Array.from([type, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
  const hopByHop16 = withExtensions([{ type: 0, units: 1 }], 58, icmp(1));
  const cases: Array<[string, string, { next: number; body: Uint8Array }]> = [
    ["Hop-by-Hop, then destination unreachable", "NO_ROUTE", withExtensions([{ type: 0, units: 0 }], 58, icmp(1))],
    ["Destination Options, then packet too big", "NO_ROUTE", withExtensions([{ type: 60, units: 1 }], 58, icmp(2))],
    [
      "a first fragment of a destination unreachable",
      "NO_ROUTE",
      withExtensions([{ type: 44, offset: 0 }], 58, icmp(1)),
    ],
    [
      "Hop-by-Hop, Routing and AH, then time exceeded",
      "NO_ROUTE",
      withExtensions(
        [
          { type: 0, units: 0 },
          { type: 43, units: 2 },
          { type: 51, units: 4 },
        ],
        58,
        icmp(3),
      ),
    ],
    ["Hop-by-Hop, then a redirect", "NO_ROUTE", withExtensions([{ type: 0, units: 0 }], 58, icmp(137))],
    ["Hop-by-Hop, then an echo request", "REPLY", withExtensions([{ type: 0, units: 0 }], 58, icmp(128))],
    ["Destination Options, then UDP", "REPLY", withExtensions([{ type: 60, units: 0 }], 17, new Uint8Array(12))],
    // A later fragment holds no upper-layer header: nothing says it is an ICMPv6 error (the kernel sends one too).
    ["a later fragment", "REPLY", withExtensions([{ type: 44, offset: 185 }], 58, icmp(1))],
    // The Hop-by-Hop header says 16 bytes; the packet ends after 8: what follows it is unknown.
    ["a truncated Hop-by-Hop header", "NO_ROUTE", { next: 0, body: hopByHop16.body.subarray(0, 8) }],
    [
      "nine Destination Options headers, then UDP",
      "NO_ROUTE",
      withExtensions(Array(9).fill({ type: 60, units: 0 }), 17, new Uint8Array(8)),
    ],
  ];

  it.each(cases)("%s: %s", (_, verdict, chain) => {
    const packet = ipv6(LOCAL6 | 5n, unrouted, chain.next, chain.body);
    loadBatch(rig, [packet]);
    const ret = encapInPlace(rig, "vxlan", 1);
    const [r] = readBatch(rig, 1);
    expect(r.verdict).toBe(verdict);
    expect(ret >>> 16).toBe(verdict === "REPLY" ? 1 : 0);
    expect(refSend6(packet, sendCtx).verdict).toBe(verdict);
    if (verdict === "REPLY") expect(hex(r.bytes)).toBe(hex(refSend6(packet, sendCtx).out!));
  });
});

describe("IPv6 receive path (socket to TUN) with anti-spoofing", () => {
  const rig = setupRig(true);
  // Where the "received" IPv6 source addresses live: ADDR points here for IPv6 underlays.
  const sources = rig.arena.alloc(64 * 16, 16);
  const froms: Array<number | bigint> = [
    ...[...NEXT_HOPS.values()].map((nh) => (nh.ip >> 32n === 0xffffn ? Number(nh.ip & 0xffffffffn) : nh.ip)),
    parseIpv6("2001:2::99"),
    0xc6120063,
  ];
  const frame = fc
    .record({
      inner: ipv6Packet,
      dst: fc.oneof(
        { arbitrary: fc.constant(OUR_MAC), weight: 8 },
        { arbitrary: fc.uint8Array({ minLength: 6, maxLength: 6 }), weight: 1 },
      ),
      from: fc.constantFrom(...froms),
    })
    .map((f) => ({ bytes: buildVxlan(VNI, f.dst, NEXT_HOPS.get(1)!.mac, 0x86dd, f.inner), from: f.from }));

  it("decapBatch (vxlan, single segments) equals the reference: exact inner packets, source in the sending peer's subnet", () => {
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 64 }), (frames) => {
        const refs = frames.map((f) =>
          refSourceCheck6(refVxlanReceive(f.bytes, VNI, OUR_MAC), f.from, lookup, nextHop),
        );
        loadBatch(
          rig,
          frames.map((f) => f.bytes),
        );
        const d = rig.batch.descView();
        const stride = rig.hp.constant("DESC_BYTES") >> 2;
        frames.forEach((f, i) => {
          if (typeof f.from === "bigint") {
            writeIpv6(rig.hp.bytes(), sources + i * 16, f.from);
            d[i * stride + (rig.hp.constant("DESC_ADDR") >> 2)] = sources + i * 16;
            d[i * stride + (rig.hp.constant("DESC_FLAGS") >> 2)] = rig.hp.constant("DESC_FLAG_ADDR6");
          } else {
            d[i * stride + (rig.hp.constant("DESC_ADDR") >> 2)] = f.from;
          }
        });
        const fwd = decapInPlace(rig, "vxlan", frames.length);
        expect(fwd).toBe(refs.filter((r) => r.verdict === "FORWARD").length);
        readBatch(rig, frames.length).forEach((r, i) => {
          const ref = refs[r.slot];
          expect({ slot: r.slot, verdict: r.verdict }).toEqual({ slot: r.slot, verdict: ref.verdict });
          if (ref.verdict !== "FORWARD") return;
          expect(i).toBeLessThan(fwd);
          expect(hex(r.bytes)).toBe(hex(ref.out!));
          expect(r.aux).toBe(ref.peer);
        });
      }),
      { numRuns: 150 },
    );
    const seen = rig.ctx.rx().packets;
    for (const v of ["FORWARD", "SPOOFED", "UNKNOWN_SOURCE", "NOT_OUR_MAC", "IP_LENGTH"]) {
      expect({ v, seen: seen[v] > 0n }).toEqual({ v, seen: true });
    }
  });
});

describe("the IPv6 underlay a send goes to", () => {
  // The control thread may change a next hop between a batch's encapsulation and its send (a peer
  // moved to another underlay address, or removed): each datagram must still go where the lookup
  // said, all 16 bytes of it.
  const peer = NEXT_HOPS.get(1)!;
  const to = (rig: Rig, descs: number, n: number) => {
    const d = new Int32Array(rig.hp.memory.buffer, descs, n * 8);
    return Array.from({ length: n }, (_, i) =>
      readIpv6(rig.hp.bytes(), d[i * 8 + (rig.hp.constant("DESC_ADDR") >> 2)]),
    );
  };
  const afterChanges = (rig: Rig, descs: number, n: number) => {
    rig.routes6!.setNextHop(1, { ...peer, ip: parseIpv6("2001:2::66") });
    const moved = to(rig, descs, n);
    rig.routes6!.clearNextHop(1);
    return { moved, removed: to(rig, descs, n) };
  };
  const dst = parseIpv6("2001:2:0:8002::9");

  it("single segments: the address as the lookup found it", () => {
    const rig = setupRig();
    loadBatch(rig, [ipv6(LOCAL6 | 5n, dst, 17, new Uint8Array(8)), ipv6(LOCAL6 | 6n, dst, 17, new Uint8Array(30))]);
    expect(encapInPlace(rig, "vxlan", 2)).toBe(2);
    expect(afterChanges(rig, rig.batch.descs, 2)).toEqual({ moved: [peer.ip, peer.ip], removed: [peer.ip, peer.ip] });
  });

  it("with a vnet header: a lone packet and every train of a segmented TSO6 super-packet", () => {
    const rig = setupRig();
    const outDescs = rig.arena.alloc(2 * rig.hp.constant("OFFLOAD_MAX_TRAINS") * 32);
    const out = rig.arena.alloc(2 * 8192);
    const tcp = new Uint8Array(20 + 1800);
    tcp[12] = 0x50; // data offset: 5 words
    loadBatch(rig, [ipv6(LOCAL6 | 5n, dst, 17, new Uint8Array(8)), ipv6(LOCAL6 | 5n, dst, 6, tcp)]);
    const d = rig.batch.descView();
    const view = new DataView(rig.hp.memory.buffer);
    [0, 4].forEach((gsoType, i) => {
      const off = d[i * 8 + (rig.hp.constant("DESC_OFF") >> 2)];
      rig.hp.bytes().fill(0, off - 12, off);
      rig.hp.bytes()[off - 11] = gsoType; // VIRTIO_NET_HDR_GSO_TCPV6 for the second
      view.setUint16(off - 8, 600, true); // gso_size
    });
    const sends = rig.hp.fn.encapBatch(
      rig.ctx.ptr,
      rig.batch.descs,
      2,
      rig.hp.wireFormat("vxlan"),
      1,
      outDescs,
      out,
      8192,
    );
    expect(sends).toBe(2); // the lone datagram, and the super-packet's 3 segments as one train
    expect(new Int32Array(rig.hp.memory.buffer, outDescs, 16)[8 + (rig.hp.constant("DESC_FLAGS") >> 2)] & 0xffff).toBe(
      22 + 60 + 600,
    );
    expect(afterChanges(rig, outDescs, 2)).toEqual({ moved: [peer.ip, peer.ip], removed: [peer.ip, peer.ip] });
  });
});

describe("IPv6 through the offload send path", () => {
  it("sends a lone IPv6 packet as one datagram to its IPv6 underlay, and drops TCPv6 super-packets it cannot segment yet", () => {
    const rig = setupRig();
    const outDescs = rig.arena.alloc(4 * rig.hp.constant("OFFLOAD_MAX_TRAINS") * 32);
    const out = rig.arena.alloc(4 * 4096);
    const packet = new Uint8Array(40 + 100);
    packet.set([0x60, 0, 0, 0, 0, 100, 17, 64]);
    packet.set(addrBytes(LOCAL6 | 5n), 8);
    packet.set(addrBytes(parseIpv6("2001:2:0:8002::9")), 24);
    const vnet = (gsoType: number) => {
      loadBatch(rig, [packet]);
      const off = rig.batch.descView()[rig.hp.constant("DESC_OFF") >> 2];
      rig.hp.bytes().fill(0, off - 12, off);
      rig.hp.bytes()[off - 11] = gsoType; // gso_type; no NEEDS_CSUM
      new DataView(rig.hp.memory.buffer).setUint16(off - 8, 1200, true);
      return rig.hp.fn.encapBatch(rig.ctx.ptr, rig.batch.descs, 1, rig.hp.wireFormat("vxlan"), 1, outDescs, out, 4096);
    };
    expect(vnet(0)).toBe(1);
    const d = new Int32Array(rig.hp.memory.buffer, outDescs, 8);
    const flags = d[rig.hp.constant("DESC_FLAGS") >> 2];
    expect(flags & rig.hp.constant("DESC_FLAG_ADDR6")).toBe(rig.hp.constant("DESC_FLAG_ADDR6"));
    expect(flags & 0xffff).toBe(0); // one datagram, no GSO
    expect(readIpv6(rig.hp.bytes(), d[rig.hp.constant("DESC_ADDR") >> 2] >>> 0)).toBe(NEXT_HOPS.get(1)!.ip);
    const frame = rig.hp.bytes().slice(d[0], d[0] + d[2]);
    expect(hex(frame)).toBe(hex(refSend6(packet, sendCtx).out!));
    const before = rig.ctx.tx().packets.OFFLOAD_HEADER;
    expect(vnet(4)).toBe(0); // VIRTIO_NET_HDR_GSO_TCPV6
    expect(rig.ctx.tx().packets.OFFLOAD_HEADER - before).toBe(1n);
  });
});

describe("without an IPv4 table (wasm-vxlan's IPv6 dataplane holds none)", () => {
  const withTable = setupRig(true);
  // The same IPv6 table and next hops, in a context whose IPv4 table is 0.
  const rig: Rig = {
    ...withTable,
    ctx: new DataplaneContext(withTable.hp, withTable.arena, {
      routes: 0,
      vni: VNI,
      mac: OUR_MAC,
      antiSpoof: true,
      peerSlots: 256,
      ipv6: { routes: withTable.routes6!.base, localAddr: LOCAL6 },
    }),
  };
  const ipv4Packet = fc
    .record({
      src: fc.integer({ min: 0xc6130000, max: 0xc613ffff }),
      dst: fc.integer({ min: 0xc6130000, max: 0xc613ffff }),
    })
    .map(({ src, dst }) => buildIpv4({ src, dst, protocol: 1, payload: Uint8Array.from([8, 0, 0, 0, 0, 1, 0, 1]) }));
  const mixed = fc.array(fc.oneof(ipv6Packet, ipv4Packet), { minLength: 1, maxLength: 64 });
  const clock = icmpClock(rig);

  it("sends IPv6 as the reference does; IPv4 packets find no route and get no ICMP error (there is no IPv4 source to send one from)", () => {
    fc.assert(
      fc.property(mixed, ICMP_TICKS, (packets, ms) => {
        const refs = clock.limit(
          packets.map((p) => (p[0] >> 4 === 4 ? { verdict: "NO_ROUTE" } : refSend6(p, sendCtx))),
          ms,
        );
        loadBatch(rig, packets);
        const ret = encapInPlace(rig, "vxlan", packets.length);
        expect(ret & 0xffff).toBe(refs.filter((r) => r.verdict === "FORWARD").length);
        expect(ret >>> 16).toBe(refs.filter((r) => r.verdict === "REPLY").length);
        for (const r of readBatch(rig, packets.length)) {
          const ref = refs[r.slot];
          expect({ slot: r.slot, verdict: r.verdict }).toEqual({ slot: r.slot, verdict: ref.verdict });
          if ("out" in ref && ref.out) expect(hex(r.bytes)).toBe(hex(ref.out));
        }
      }),
      { numRuns: 100 },
    );
  });

  it("receives IPv6 from its peers as the reference does; an IPv4 inner packet comes from no known peer", () => {
    // From the peer on an IPv4 underlay (::ffff:198.18.0.3), as over an IPv4 underlay: a plain IPv4 ADDR.
    const from = Number(NEXT_HOPS.get(2)!.ip & 0xffffffffn);
    fc.assert(
      fc.property(mixed, (inner) => {
        const frames = inner.map((p) =>
          buildVxlan(VNI, OUR_MAC, NEXT_HOPS.get(2)!.mac, p[0] >> 4 === 4 ? 0x0800 : 0x86dd, p),
        );
        const refs = frames.map((f, i) =>
          inner[i][0] >> 4 === 4
            ? { verdict: "UNKNOWN_SOURCE" }
            : refSourceCheck6(refVxlanReceive(f, VNI, OUR_MAC), from, lookup, nextHop),
        );
        loadBatch(rig, frames);
        const d = rig.batch.descView();
        const stride = rig.hp.constant("DESC_BYTES") >> 2;
        frames.forEach((_, i) => {
          d[i * stride + (rig.hp.constant("DESC_ADDR") >> 2)] = from;
        });
        expect(decapInPlace(rig, "vxlan", frames.length)).toBe(refs.filter((r) => r.verdict === "FORWARD").length);
        for (const r of readBatch(rig, frames.length)) {
          const ref = refs[r.slot];
          expect({ slot: r.slot, verdict: r.verdict }).toEqual({ slot: r.slot, verdict: ref.verdict });
          if ("out" in ref && ref.verdict === "FORWARD") expect(hex(r.bytes)).toBe(hex(ref.out!));
        }
      }),
      { numRuns: 100 },
    );
    expect(rig.ctx.rx().packets.UNKNOWN_SOURCE).toBeGreaterThan(0n);
    expect(rig.ctx.rx().packets.FORWARD).toBeGreaterThan(0n);
  });
});

describe("the ICMP error rate limit (Linux's defaults: 1000 a second, bursts of 50)", () => {
  // No routes at all: every packet gets an error, IPv4 (net unreachable) and IPv6 (no route) alike.
  const unroutedPair = (i: number) => [
    buildIpv4({ src: 0xc6130101, dst: 0xc6120000 + i, payload: new Uint8Array(8) }),
    ipv6(LOCAL6 | 5n, parseIpv6("2001:2:0:7fff::1") + BigInt(i), 17, new Uint8Array(8)),
  ];
  const floodOf = (n: number) => Array.from({ length: n }, (_, i) => unroutedPair(i)[i % 2]);
  const bare = () => makeRig({ vni: VNI, mac: OUR_MAC, ipv6: { localAddr: LOCAL6 } });
  /** The send path over `packets`: the verdict of each, in packet order. */
  const run = (rig: Rig, packets: Uint8Array[]) => {
    loadBatch(rig, packets);
    const replies = encapInPlace(rig, "vxlan", packets.length) >>> 16;
    const verdicts = readBatch(rig, packets.length)
      .sort((a, b) => a.slot - b.slot)
      .map((r) => r.verdict);
    expect(verdicts.filter((v) => v === "REPLY").length).toBe(replies);
    return verdicts;
  };
  const count = (verdicts: string[]) => ({
    replies: verdicts.filter((v) => v === "REPLY").length,
    limited: verdicts.filter((v) => v === "ICMP_RATE_LIMITED").length,
  });

  it("writes a burst of 50 errors of both families, then one per millisecond of the worker's clock", () => {
    const rig = bare();
    const clock = icmpClock(rig);
    const first = run(rig, floodOf(64));
    // In packet order: the first 50 get their error, the rest are dropped and counted.
    expect(first).toEqual([...Array(50).fill("REPLY"), ...Array(14).fill("ICMP_RATE_LIMITED")]);
    expect(count(run(rig, floodOf(10)))).toEqual({ replies: 0, limited: 10 }); // same ms: none
    clock.advance(7);
    expect(count(run(rig, floodOf(10)))).toEqual({ replies: 7, limited: 3 });
    clock.advance(1);
    expect(count(run(rig, floodOf(10)))).toEqual({ replies: 1, limited: 9 });
    clock.advance(60_000); // a long quiet: a full bucket, no more
    expect(count(run(rig, floodOf(64)))).toEqual({ replies: 50, limited: 14 });
    clock.advance(2 ** 32 - 5); // 5 ms back, as a replaced worker's clock starts again: full
    expect(count(run(rig, floodOf(64)))).toEqual({ replies: 50, limited: 14 });
    const { packets } = rig.ctx.tx();
    expect([packets.REPLY, packets.ICMP_RATE_LIMITED]).toEqual([
      50n + 7n + 1n + 50n + 50n,
      14n + 10n + 3n + 9n + 14n + 14n,
    ]);
  });

  it("is the worker's: contexts given the same bucket share its tokens", () => {
    const rig = bare();
    const other = new DataplaneContext(rig.hp, rig.arena, {
      routes: rig.routes.base,
      vni: VNI,
      mac: OUR_MAC,
      antiSpoof: false,
      peerSlots: 0,
      ipv6: { routes: rig.routes6!.base, localAddr: LOCAL6 },
      icmpBucket: rig.ctx.icmpBucket,
    });
    expect(count(run(rig, floodOf(30)))).toEqual({ replies: 30, limited: 0 });
    expect(count(run({ ...rig, ctx: other }, floodOf(30)))).toEqual({ replies: 20, limited: 10 });
    expect(other.tx().packets.ICMP_RATE_LIMITED).toBe(10n);
  });

  it("holds on the offload send path (vnet headers) too; an error withheld leaves no reply behind", () => {
    const rig = bare();
    const outDescs = rig.arena.alloc(64 * rig.hp.constant("OFFLOAD_MAX_TRAINS") * 32);
    loadBatch(rig, floodOf(64));
    const d = rig.batch.descView();
    // A zeroed vnet header (no GSO, no checksum to finish) in front of each packet.
    for (let i = 0; i < 64; i++) rig.hp.bytes().fill(0, d[i * 8] - 12, d[i * 8]);
    const r = rig.hp.fn.encapBatch(rig.ctx.ptr, rig.batch.descs, 64, rig.hp.wireFormat("vxlan"), 1, outDescs, 0, 0);
    expect([r & 0xffff, r >>> 16]).toEqual([0, 50]);
    expect(rig.ctx.tx().packets.ICMP_RATE_LIMITED).toBe(14n);
    // The replies are the first 50 packets' errors, each behind a zeroed vnet header.
    const out = new Int32Array(rig.hp.memory.buffer, outDescs, 50 * 8);
    for (let i = 0; i < 50; i++) {
      const off = out[i * 8];
      const version = rig.hp.bytes()[off] >> 4;
      expect(version).toBe(i % 2 === 0 ? 4 : 6);
      expect(
        rig.hp
          .bytes()
          .subarray(off - 12, off)
          .every((b) => b === 0),
      ).toBe(true);
    }
  });
});
