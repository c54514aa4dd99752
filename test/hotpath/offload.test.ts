// Differential tests of the offload paths (assembly/packet/offload-send.ts, offload-receive.ts):
// random TCP super-packets, as a TUN device with TSO hands them over, are segmented by Wasm and
// must equal the plain reference segmentation byte for byte, with valid checksums, in UDP GSO
// trains; those datagrams, interleaved over flows and batched as UDP GRO would, are decapsulated
// and coalesced by Wasm, and re-segmenting what comes out must give back the very same segments.
// Whole connections mix super-packets with lone segments of every kind (pure ACKs, SYN, FIN, RST,
// URG; checksums left partial or finished), which must cross both paths unchanged. TCP over IPv6
// takes the same paths (TSO6 in, TCPv6 GSO headers out), over an IPv6 underlay with the source
// check on, so the sender's address must survive GRO batches being taken apart.
import fc from "fast-check";
import { GRO_MAXES, PICKS } from "../support/arbitraries.js";
import { describe, expect, it } from "vitest";
import { DATAPLANE_MAX_MTU, SEGMENT_SLOT_BYTES, tunGsoMaxSegs } from "../../src/dataplane/dataplane.js";
import { buildIpv4, buildUdp4, buildVxlan } from "../reference/build.js";
import {
  completePartial,
  buildTcp4,
  buildTcp6,
  refLoneHeader,
  refSegmentTcp4,
  refSegmentTcp6,
  tcp4ChecksumsValid,
  tcp6ChecksumValid,
  type Tcp4Fields,
  type Tcp6Fields,
} from "../reference/tcp-offload.js";
import {
  datagrams,
  leavePartial,
  MAC1,
  MAC2,
  PEER,
  PEER6,
  payloadOf,
  receive,
  RX,
  RX6,
  send,
  SENDER6,
  TX,
  groRuns,
  interleave,
  type Format,
  type TunRead,
} from "../support/offload.js";

/** The TCP header fields of a super-packet, either family. */
const superPacketTcp = {
  srcPort: fc.integer({ min: 1024, max: 65535 }),
  seq: fc.nat({ max: 0xffffffff }),
  ack: fc.nat({ max: 0xffffffff }),
  flags: fc.constantFrom(0x10, 0x18, 0x19, 0x90, 0x98),
  window: fc.integer({ min: 0, max: 0xffff }),
  options: fc.constantFrom(0, 12, 40).map((n) => Uint8Array.from({ length: n }, (_, i) => (i % 4 === 0 ? 1 : i))),
};

/** The drawn TCP fields, to port 5201. */
const tcpOf = (g: {
  srcPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  options: Uint8Array;
}) => ({
  srcPort: g.srcPort,
  dstPort: 5201,
  seq: g.seq,
  ack: g.ack,
  flags: g.flags,
  window: g.window,
  options: g.options,
});

const superPacket = fc
  .record({
    ...superPacketTcp,
    id: fc.integer({ min: 0, max: 0xffff }),
    ttl: fc.integer({ min: 3, max: 255 }),
    tos: fc.constantFrom(0, 0x10),
    gsoSize: fc.integer({ min: 536, max: 1398 }),
    segments: fc.integer({ min: 1, max: 44 }),
    short: fc.integer({ min: 0, max: 535 }),
    seed: fc.integer(),
    junk: fc.integer({ min: 0, max: 0xffff }), // the TCP checksum field as the kernel leaves it: not ours to trust
  })
  .map((g) => {
    const length = Math.max(1, g.segments * g.gsoSize - g.short);
    const f: Tcp4Fields = {
      src: 0xc6130105,
      dst: 0xc6130207,
      ...tcpOf(g),
      id: g.id,
      ttl: g.ttl,
      tos: g.tos,
      payload: payloadOf(g.seed, length),
    };
    const bytes = buildTcp4(f);
    bytes[36] = g.junk >> 8;
    bytes[37] = g.junk & 255;
    return { fields: f, bytes, gsoSize: g.gsoSize };
  });

/**
 * One direction of a connection as its TUN reads: lone segments of any flags (pure ACKs, SYN,
 * FIN, RST, URG, ECE, CWR; empty, short or full) and TSO super-packets, with sequence numbers and
 * IP IDs running on as the kernel would send them. Lone segments come with their checksum left
 * partial (NEEDS_CSUM) or finished. `wire` is what must reach the peer's TUN device, segment by segment.
 */
const connection = fc
  .record({
    srcPort: fc.integer({ min: 1024, max: 65535 }),
    seq: fc.nat({ max: 0xffffffff }),
    ack: fc.nat({ max: 0xffffffff }),
    window: fc.integer({ min: 0, max: 0xffff }),
    options: fc.constantFrom(0, 12).map((n) => Uint8Array.from({ length: n }, (_, i) => (i % 4 === 0 ? 1 : i))),
    id: fc.integer({ min: 0, max: 0xffff }),
    ttl: fc.integer({ min: 3, max: 255 }),
    gsoSize: fc.integer({ min: 536, max: 1398 }),
    items: fc.array(
      fc.record({
        flags: fc.constantFrom(0x10, 0x18, 0x11, 0x19, 0x01, 0x04, 0x14, 0x02, 0x12, 0x30, 0x38, 0x50, 0x90, 0x98),
        // payload: none, short, exactly one segment, or a super-packet of 2..12 segments
        size: fc.oneof(
          fc.constant(0),
          fc.integer({ min: 1, max: 200 }),
          fc.constant(-1),
          fc.integer({ min: 2, max: 12 }).map((n) => -n),
        ),
        partial: fc.boolean(),
        seed: fc.integer(),
      }),
      { minLength: 1, maxLength: 12 },
    ),
  })
  .map((c) => {
    let seq = c.seq;
    let id = c.id;
    return c.items.map((it) => {
      const gso = it.size < -1 && (it.flags & 0x06) === 0; // the kernel never sends SYN or RST with TSO
      const length =
        it.size >= 0 ? it.size : it.size === -1 || !gso ? c.gsoSize : -it.size * c.gsoSize - (it.seed & 511);
      const fields: Tcp4Fields = {
        src: 0xc6130105,
        dst: 0xc6130207,
        srcPort: c.srcPort,
        dstPort: 7000,
        seq,
        ack: c.ack,
        flags: it.flags,
        window: c.window,
        options: c.options,
        id,
        ttl: c.ttl,
        payload: payloadOf(it.seed, length),
      };
      seq = (seq + length + (it.flags & 0x02 ? 1 : 0) + (it.flags & 0x01 ? 1 : 0)) >>> 0;
      id = (id + (gso ? Math.ceil(length / c.gsoSize) : 1)) & 0xffff;
      const partial = !gso && it.partial;
      const bytes = buildTcp4(fields);
      let read: TunRead;
      if (gso) read = { bytes, gsoSize: c.gsoSize };
      else if (partial) read = { bytes: leavePartial(bytes), gsoSize: 0, gsoType: 0 };
      else read = { bytes, gsoSize: 0, gsoType: 0, needsCsum: false };
      return {
        read,
        wire: (hops: number) => {
          const sent = buildTcp4({ ...fields, ttl: c.ttl - hops });
          // A partial checksum is finished as the kernel finishes it in software, as weft does.
          if (partial) return [completePartial(leavePartial(sent), 20, 16, { skbChecksumHelp: true })];
          return refSegmentTcp4(sent, gso ? c.gsoSize : Math.max(1, length));
        },
      };
    });
  });

/** The segments as they must arrive after `hops` TTL decrements (flannel udp: one per side). */
const expected = (p: { fields: Tcp4Fields; gsoSize: number }, hops: number) =>
  refSegmentTcp4(buildTcp4({ ...p.fields, ttl: p.fields.ttl! - hops }), p.gsoSize);

/** Sends each flow's TUN read and batches all their datagrams, interleaved, as UDP GRO would (at most 16 receives). */
function groBatched(reads: TunRead[], format: Format, picks: number[], maxes: number[]): Uint8Array[][] {
  const lists = reads.map((r) => {
    const { trains, mem } = send([r], format);
    return datagrams(trains, mem);
  });
  return groRuns(interleave(lists, picks), maxes).slice(0, 16);
}

/**
 * A segment's identity across hops: IPv4's ID (IPv6's payload length) and the transport bytes with
 * the checksum field zeroed (flannel udp decrements the TTL, NEEDS_CSUM rewrites the field).
 */
function segKey(ip: Uint8Array): string {
  const l3 = ip[0] >> 4 === 6 ? 40 : (ip[0] & 15) * 4;
  const t = ip.slice(l3);
  t[16] = 0;
  t[17] = 0;
  return `${ip[4]},${ip[5]}:${Buffer.from(t).toString("hex")}`;
}

/** The segments whose outer checksum the kernel verified: those of receives of more than one datagram. */
function verifiedSegments(runs: Uint8Array[][], format: Format | 22): Set<string> {
  const skip = typeof format === "number" ? format : header(format);
  return new Set(runs.filter((r) => r.length > 1).flatMap((r) => r.map((d) => segKey(d.subarray(skip)))));
}

/**
 * A lone packet as the TUN device gets it: its vnet header must be the reference's for it, and
 * with NEEDS_CSUM it is finished as the kernel would; returns it with its checksum in full.
 */
function lone(o: ReturnType<typeof receive>[number], verified: Set<string>): Uint8Array {
  const want = refLoneHeader(o.bytes, verified.has(segKey(o.bytes)));
  expect({ flags: o.flags, csumStart: o.csumStart, csumOffset: o.csumOffset }).toEqual(want);
  return want.flags ? completePartial(o.bytes, want.csumStart, want.csumOffset) : o.bytes;
}

/** The receiver's count of packets it passed on without its own checksum check. */
const trustedCount = (rx = RX) => rx.rig.ctx.rx().checksumTrusted;

/** What the TUN device gets, as segments again: super-packets finished and re-segmented by the reference. */
function resegment(out: ReturnType<typeof receive>, verified: Set<string>): Uint8Array[] {
  return out.flatMap((o) => {
    if (o.gsoType === 0) return [lone(o, verified)];
    const l3 = o.bytes[0] >> 4 === 6 ? 40 : 20;
    expect({
      flags: o.flags,
      gsoType: o.gsoType,
      csumStart: o.csumStart,
      csumOffset: o.csumOffset,
      hdrLen: o.hdrLen,
    }).toEqual({
      flags: 1,
      gsoType: l3 === 40 ? GSO_TCPV6 : 1,
      csumStart: l3,
      csumOffset: 16,
      hdrLen: l3 + (o.bytes[l3 + 12] >> 4) * 4,
    });
    return (l3 === 40 ? refSegmentTcp6 : refSegmentTcp4)(completePartial(o.bytes, l3, 16), o.gsoSize);
  });
}

const header = (format: Format) => (format === "vxlan" ? 22 : 0);

for (const format of ["vxlan", "udp"] as const) {
  describe(`offloads, ${format} format`, () => {
    it("segments super-packets exactly as the reference does, in UDP GSO trains within the limits", () => {
      fc.assert(
        fc.property(superPacket, (p) => {
          const { trains, mem } = send([p], format);
          const ds = datagrams(trains, mem);
          const segs = ds.map((d) => d.subarray(header(format)));
          const want = expected(p, format === "udp" ? 1 : 0);
          expect(segs).toEqual(want);
          for (const s of segs) expect(tcp4ChecksumsValid(s)).toBe(true);
          const hdr = 20 + 20 + p.fields.options!.length;
          for (const d of ds) expect(d.length).toBeLessThanOrEqual(header(format) + hdr + p.gsoSize);
          if (format === "vxlan") for (const d of ds) expect([...d.subarray(8, 20)]).toEqual([...MAC2, ...MAC1]);
          for (const t of trains) {
            expect({ addr: t.addr, port: t.port }).toEqual({ addr: PEER.ip, port: PEER.port });
            expect(t.len).toBeLessThanOrEqual(65507);
            if (t.flags) expect(t.len / t.flags).toBeLessThanOrEqual(64);
          }
        }),
        { numRuns: 25 },
      );
    });

    it("takes any segment size a vnet header may carry, 1..65535, without a trap (a trap restarts the worker)", () => {
      fc.assert(
        fc.property(superPacket, fc.integer({ min: 1, max: 65535 }), (p, gsoSize) => {
          const { trains } = send([{ ...p, gsoSize }], format);
          for (const t of trains) expect(t.len).toBeLessThanOrEqual(65507);
        }),
        { numRuns: 50 },
      );
    });

    it("coalesces the segments of interleaved flows, batched as UDP GRO, back into the same stream", () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(superPacket, { minLength: 1, maxLength: 3, selector: (p) => p.fields.srcPort }),
          PICKS,
          GRO_MAXES,
          (flows, picks, maxes) => {
            const runs = groBatched(flows, format, picks, maxes);
            const sent = runs.flat();
            const before = trustedCount();
            const out = receive(runs, format);
            const got = resegment(out, verifiedSegments(runs, format));
            // Every segment of a GRO receive was passed on without our check, and no other.
            expect(trustedCount() - before).toBe(BigInt(runs.filter((r) => r.length > 1).flat().length));
            const hops = format === "udp" ? 2 : 0;
            // Every datagram sent arrives, in order per flow, as exactly the segment it was.
            for (const p of flows) {
              const mine = (s: Uint8Array) => ((s[20] << 8) | s[21]) === p.fields.srcPort;
              const want = expected(p, hops).filter(
                (_, k) => k < sent.filter((d) => mine(d.subarray(header(format)))).length,
              );
              expect(got.filter(mine)).toEqual(want);
            }
            // A flow alone in the batch, only ACK/PSH, comes out as one super-packet.
            if (flows.length === 1 && runs.length <= 16 && (flows[0].fields.flags & ~0x08) === 0x10)
              expect(out.length).toBe(1);
          },
        ),
        { numRuns: 25 },
      );
    });

    it("carries connections of lone segments of any flags and super-packets through both paths unchanged", () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(connection, {
            minLength: 1,
            maxLength: 3,
            selector: (c) => (c[0].read.bytes[20] << 8) | c[0].read.bytes[21],
          }),
          PICKS,
          GRO_MAXES,
          (conns, picks, maxes) => {
            const lists = conns.map((c) => {
              const ds: Uint8Array[] = [];
              for (let i = 0; i < c.length; i += 4) {
                const { trains, replies, mem } = send(
                  c.slice(i, i + 4).map((x) => x.read),
                  format,
                );
                expect(replies).toBe(0);
                ds.push(...datagrams(trains, mem));
              }
              return ds;
            });
            // Every datagram carries exactly the segment the kernel's own GSO and checksumming would send.
            const hopsOut = format === "udp" ? 1 : 0;
            conns.forEach((c, i) =>
              expect(lists[i].map((d) => d.subarray(header(format)))).toEqual(c.flatMap((x) => x.wire(hopsOut))),
            );
            const runs = groRuns(interleave(lists, picks), maxes).slice(0, 16);
            const sent = runs.flat();
            const got = resegment(receive(runs, format), verifiedSegments(runs, format));
            const hops = format === "udp" ? 2 : 0;
            for (const c of conns) {
              const port = (c[0].read.bytes[20] << 8) | c[0].read.bytes[21];
              const mine = (s: Uint8Array) => ((s[20] << 8) | s[21]) === port;
              const count = sent.filter((d) => mine(d.subarray(header(format)))).length;
              expect(got.filter(mine)).toEqual(c.flatMap((x) => x.wire(hops)).slice(0, count));
            }
          },
        ),
        { numRuns: 12 },
      );
    });

    it("sends a partial TCP checksum that comes to 0 as 0xffff, as the kernel finishes one in software", () => {
      const fields: Tcp4Fields = {
        src: 0xc6130105,
        dst: 0xc6130207,
        srcPort: 40000,
        dstPort: 7000,
        seq: 1,
        ack: 2,
        flags: 0x18,
        window: 0,
        payload: payloadOf(7, 100),
      };
      // The window that brings the checksum to 0 (the reference writes it as 0x0000); one does.
      let bytes = buildTcp4(fields);
      while ((bytes[36] !== 0 || bytes[37] !== 0) && fields.window < 0xffff)
        bytes = buildTcp4({ ...fields, window: ++fields.window });
      expect([bytes[36], bytes[37]]).toEqual([0, 0]);
      const { trains, replies, mem } = send([{ bytes: leavePartial(bytes.slice()), gsoSize: 0, gsoType: 0 }], format);
      expect(replies).toBe(0);
      const [sent] = datagrams(trains, mem).map((d) => d.subarray(header(format)));
      expect([sent[36], sent[37]]).toEqual([0xff, 0xff]);
      expect(tcp4ChecksumsValid(sent)).toBe(true);
    });

    it("never merges a damaged segment of a single datagram: it reaches the kernel alone, to be dropped there", () => {
      fc.assert(
        fc.property(superPacket, fc.nat(), fc.nat(), fc.boolean(), (p, pick, where, alone) => {
          const { trains, mem } = send([p], format);
          const ds = datagrams(trains, mem);
          fc.pre(ds.length >= 2 && (!alone || ds.length <= 16));
          const k = pick % ds.length;
          // One byte of the TCP header or payload (the sum covers both, in separate passes).
          const tcpStart = header(format) + 20;
          const at = tcpStart + (where % (ds[k].length - tcpStart));
          const damaged = Uint8Array.from(ds[k], (b, j) => (j === at ? b ^ 0x5a : b));
          // The damaged one alone, as a datagram UDP GRO did not merge (a zero outer checksum, or
          // none to merge with); the others around it in GRO receives of as many as fit 64 KiB,
          // or, `alone`, each a receive of its own as from a kernel vxlan peer (zero checksums).
          const per = alone ? 1 : Math.floor(65535 / ds[0].length);
          const chunk = (xs: Uint8Array[]) =>
            Array.from({ length: Math.ceil(xs.length / per) }, (_, r) => xs.slice(r * per, (r + 1) * per));
          const runs = [...chunk(ds.slice(0, k)), [damaged], ...chunk(ds.slice(k + 1))];
          const before = trustedCount();
          const out = receive(runs, format);
          expect(trustedCount() - before).toBe(BigInt(runs.filter((r) => r.length > 1).flat().length));
          const got = resegment(out, verifiedSegments(runs, format));
          const hops = format === "udp" ? 2 : 0;
          const want = expected(p, hops);
          expect(got.length).toBe(want.length);
          got.forEach((s, i) => {
            if (i === k) expect(tcp4ChecksumsValid(s)).toBe(false);
            else expect(s).toEqual(want[i]);
          });
          expect(
            out.some(
              (o) =>
                o.gsoType === 0 && o.flags === 0 && o.bytes.length === want[k].length && !tcp4ChecksumsValid(o.bytes),
            ),
          ).toBe(true);
        }),
        { numRuns: 20 },
      );
    });

    it("trusts the segments of a GRO receive without a pass over them: the kernel verified their outer checksum", () => {
      // A damaged segment inside a GRO receive cannot come from the kernel (it verified the outer
      // checksum over the very bytes); planting one shows that no inner check runs there.
      fc.assert(
        fc.property(superPacket, fc.nat(), (p, pick) => {
          const { trains, mem } = send([p], format);
          const ds = datagrams(trains, mem);
          fc.pre((p.fields.flags & ~0x08) === 0x10 && ds.length >= 2 && ds.length <= 64);
          fc.pre(ds.reduce((n, d) => n + d.length, 0) <= 65535);
          const k = pick % ds.length;
          const bad = ds.map((d, i) =>
            i === k ? Uint8Array.from(d, (b, j) => (j === d.length - 1 ? b ^ 0x5a : b)) : d,
          );
          const out = receive([bad], format);
          expect(out.length).toBe(1);
          expect(out[0].gsoType).toBe(1);
        }),
        { numRuns: 10 },
      );
    });
  });
}

/** TCP/IPv6 super-packets between pods 2001:2:0:8001::5 and 2001:2:0:8002::7, as TSO6 hands them over. */
const superPacket6 = fc
  .record({
    ...superPacketTcp,
    hopLimit: fc.integer({ min: 1, max: 255 }),
    trafficClass: fc.constantFrom(0, 0x10, 0xb8),
    flowLabel: fc.integer({ min: 0, max: 0xfffff }),
    gsoSize: fc.integer({ min: 516, max: 1378 }),
    segments: fc.integer({ min: 1, max: 44 }),
    short: fc.integer({ min: 0, max: 515 }),
    seed: fc.integer(),
    junk: fc.integer({ min: 0, max: 0xffff }),
  })
  .map((g) => {
    const f: Tcp6Fields = {
      src: 0x2001_0002_0000_8001_0000_0000_0000_0005n,
      dst: 0x2001_0002_0000_8002_0000_0000_0000_0007n,
      ...tcpOf(g),
      hopLimit: g.hopLimit,
      trafficClass: g.trafficClass,
      flowLabel: g.flowLabel,
      payload: payloadOf(g.seed, Math.max(1, g.segments * g.gsoSize - g.short)),
    };
    const bytes = buildTcp6(f);
    bytes[56] = g.junk >> 8;
    bytes[57] = g.junk & 255;
    return { fields: f, bytes, gsoSize: g.gsoSize };
  });

const GSO_TCPV6 = 4;
const tso6 = (p: Omit<TunRead, "gsoType">): TunRead => ({ ...p, gsoType: GSO_TCPV6 });
const peer6Addr = (addr: number) =>
  new DataView(TX.rig.hp.memory.buffer, addr, 16).getBigUint64(0) * 2n ** 64n +
  new DataView(TX.rig.hp.memory.buffer, addr, 16).getBigUint64(8);

describe("offloads, TCP over IPv6 (vxlan format, IPv6 underlay)", () => {
  it("segments TSO6 super-packets exactly as the reference does, sent to the peer's IPv6 underlay", () => {
    fc.assert(
      fc.property(superPacket6, (p) => {
        const { trains, mem } = send([tso6(p)], "vxlan");
        const ds = datagrams(trains, mem);
        const segs = ds.map((d) => d.subarray(22));
        expect(segs).toEqual(refSegmentTcp6(buildTcp6(p.fields), p.gsoSize));
        for (const s of segs) expect(tcp6ChecksumValid(s)).toBe(true);
        for (const d of ds) {
          expect(d.length).toBeLessThanOrEqual(22 + 40 + 20 + p.fields.options!.length + p.gsoSize);
          expect([...d.subarray(8, 20)]).toEqual([...MAC2, ...MAC1]);
          expect((d[20] << 8) | d[21]).toBe(0x86dd);
        }
        const addr6 = TX.rig.hp.constant("DESC_FLAG_ADDR6");
        for (const t of trains) {
          expect(t.flags & addr6).toBe(addr6);
          expect({ addr: peer6Addr(t.addr), port: t.port }).toEqual({ addr: PEER6.ip, port: PEER6.port });
          expect(t.len).toBeLessThanOrEqual(65507);
          if (t.flags & 0xffff) expect(t.len / (t.flags & 0xffff)).toBeLessThanOrEqual(64);
        }
      }),
      { numRuns: 25 },
    );
  });

  it("segments TSO6 super-packets behind hop-by-hop and destination options headers, each segment carrying them", () => {
    // As a socket with IPV6_HOPOPTS or IPV6_DSTOPTS sends: the vnet header's csum_start points at TCP.
    const extensions = fc.oneof(
      fc.constant([{ type: 60, length: 8 }]),
      fc.integer({ min: 1, max: 16 }).map((n) => [{ type: 0, length: 8 * n }]),
      fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 })).map(([a, b]) => [
        { type: 0, length: 8 * a },
        { type: 60, length: 8 * b },
      ]),
    );
    fc.assert(
      fc.property(superPacket6, extensions, (p, ext) => {
        const fields = { ...p.fields, extensions: ext };
        const { trains, mem } = send([tso6({ bytes: buildTcp6(fields), gsoSize: p.gsoSize })], "vxlan");
        const segs = datagrams(trains, mem).map((d) => d.subarray(22));
        expect(segs).toEqual(refSegmentTcp6(buildTcp6(fields), p.gsoSize));
        for (const s of segs) expect(tcp6ChecksumValid(s)).toBe(true);
      }),
      { numRuns: 25 },
    );
  });

  it("refuses an IPv6 super-packet whose headers a segment may not copy, or whose csum_start lies", () => {
    const [p] = fc.sample(superPacket6, { numRuns: 1, seed: 8 });
    const dst8 = [{ type: 60, length: 8 }];
    const cases: TunRead[] = [
      // a routing header: TCP's checksum would cover its final destination
      tso6({ bytes: buildTcp6({ ...p.fields, extensions: [{ type: 43, length: 8 }] }), gsoSize: p.gsoSize }),
      // hop-by-hop anywhere but first
      tso6({
        bytes: buildTcp6({
          ...p.fields,
          extensions: [
            { type: 60, length: 8 },
            { type: 0, length: 8 },
          ],
        }),
        gsoSize: p.gsoSize,
      }),
      // csum_start at the extension header, behind it by 8, short of the fixed header, past the end
      ...[40, 56, 20, 65535].map((csumStart) =>
        tso6({ bytes: buildTcp6({ ...p.fields, extensions: dst8 }), gsoSize: p.gsoSize, csumStart }),
      ),
      // no extension header but csum_start says there is one
      tso6({ ...p, csumStart: 48 }),
      // UDP's GSO type for TCP behind the header
      { bytes: buildTcp6({ ...p.fields, extensions: dst8 }), gsoSize: p.gsoSize, gsoType: 5 },
    ];
    const before = TX.rig.ctx.tx().packets.OFFLOAD_HEADER;
    for (const c of cases) expect(send([c], "vxlan").trains).toHaveLength(0);
    expect(TX.rig.ctx.tx().packets.OFFLOAD_HEADER - before).toBe(BigInt(cases.length));
  });

  it("fits a super-packet of as many full segments as the TUN device's gso_max_segs (tunGsoMaxSegs) lets through into a segment slot, whatever its headers", () => {
    // The TUN and pod MTUs the backends set: vxlan over IPv4 and IPv6 (pods 20 bytes over the
    // device: a forwarding kernel that misreads destination options lets their segments through),
    // udp, the largest, IPv6's least. Segments come at the larger of the two.
    const mtus: Array<[number, number]> = [
      [1450, 1450],
      [1430, 1450],
      [1472, 1472],
      [DATAPLANE_MAX_MTU, DATAPLANE_MAX_MTU],
      [1280, 1300],
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...mtus),
        fc.constantFrom<Format>("vxlan", "udp"),
        fc.nat(),
        fc.integer({ min: 0, max: 10 }),
        fc.integer(),
        ([tunMtu, podMtu], format, ext, opt4, seed) => {
          const segs = tunGsoMaxSegs(TX.rig.hp, format, tunMtu, podMtu);
          const mtu = Math.max(tunMtu, podMtu);
          const encap = format === "vxlan" ? 22 : 0;
          expect(segs * (encap + mtu)).toBeLessThanOrEqual(SEGMENT_SLOT_BYTES);
          const options = Uint8Array.from({ length: 4 * opt4 }, () => 1);
          // flannel's udp carries IPv4 only; over vxlan IPv6 with destination options of up to the
          // whole MTU but 64 bytes of segment.
          const extLen = format === "vxlan" ? 8 * (ext % Math.floor((mtu - 60 - options.length - 64) / 8)) : 0;
          const hdr = (format === "vxlan" ? 40 + extLen : 20) + 20 + options.length;
          const gsoSize = mtu - hdr;
          // Full segments, as many as gso_max_segs lets through and a 64 KiB read holds.
          const n = Math.min(segs, Math.floor((65536 - hdr) / gsoSize));
          const payload = payloadOf(seed, n * gsoSize);
          const tcp = { srcPort: 40000, dstPort: 5201, seq: 1, ack: 2, flags: 0x10, window: 100, options, payload };
          const bytes =
            format === "vxlan"
              ? buildTcp6({
                  ...tcp,
                  src: 0x2001_0002_0000_8001_0000_0000_0000_0005n,
                  dst: 0x2001_0002_0000_8002_0000_0000_0000_0007n,
                  extensions: extLen > 0 ? [{ type: 60, length: extLen }] : [],
                })
              : buildTcp4({ ...tcp, src: 0xc6130105, dst: 0xc6130207, ttl: 64 });
          const read = format === "vxlan" ? tso6({ bytes, gsoSize }) : { bytes, gsoSize };
          const { trains, mem } = send([read], format);
          const out = datagrams(trains, mem).map((d) => d.subarray(encap));
          expect(out.every((d) => d.length === mtu)).toBe(true);
          // flannel's udp decrements the TTL before cutting.
          const want = format === "vxlan" ? bytes : buildTcp4({ ...tcp, src: 0xc6130105, dst: 0xc6130207, ttl: 63 });
          expect(out).toEqual((format === "vxlan" ? refSegmentTcp6 : refSegmentTcp4)(want, gsoSize));
        },
      ),
      // Always the shape that overflowed: pods 20 bytes over the TUN device, behind 600 bytes of
      // destination options (67 segments of 22 + 1450 bytes pass 96 KiB).
      { numRuns: 12, examples: [[[1430, 1450], "vxlan", 75, 0, 1]] },
    );
  });

  it("refuses a super-packet whose GSO type does not fit its IP version", () => {
    const [p] = fc.sample(superPacket6, { numRuns: 1, seed: 6 });
    const { trains } = send([{ ...p, gsoType: 1 }], "vxlan");
    expect(trains).toHaveLength(0);
  });

  it("coalesces interleaved TCPv6 flows from an IPv6 peer, source-checked, into TCPv6 GSO super-packets", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(superPacket6, { minLength: 1, maxLength: 3, selector: (p) => p.fields.srcPort }),
        PICKS,
        GRO_MAXES,
        (flows, picks, maxes) => {
          const runs = groBatched(flows.map(tso6), "vxlan", picks, maxes);
          const sent = runs.flat();
          const before = trustedCount(RX6);
          const out = receive(runs, "vxlan", RX6, SENDER6);
          expect(trustedCount(RX6) - before).toBe(BigInt(runs.filter((r) => r.length > 1).flat().length));
          const got = resegment(out, verifiedSegments(runs, 22));
          for (const p of flows) {
            const mine = (s: Uint8Array) => ((s[40] << 8) | s[41]) === p.fields.srcPort;
            const count = sent.filter((d) => mine(d.subarray(22))).length;
            expect(got.filter(mine)).toEqual(refSegmentTcp6(buildTcp6(p.fields), p.gsoSize).slice(0, count));
          }
          if (flows.length === 1 && (flows[0].fields.flags & ~0x08) === 0x10) expect(out.length).toBe(1);
        },
      ),
      { numRuns: 25 },
    );
  });

  it("drops as spoofed what a GRO batch brings from any other IPv6 underlay address", () => {
    const [p] = fc.sample(superPacket6, { numRuns: 1, seed: 7 });
    const { trains, mem } = send([tso6(p)], "vxlan");
    const ds = datagrams(trains, mem);
    expect(receive([ds.slice(0, 64)], "vxlan", RX6, SENDER6).length).toBeGreaterThan(0);
    expect(receive([ds.slice(0, 64)], "vxlan", RX6, SENDER6 + 1n)).toHaveLength(0);
  });
});

/**
 * Lone packets of every kind, all `total` bytes long (as a GRO receive has them): UDP with a
 * checksum, UDP without one, TCP (SYN: never merged) over IPv4 and IPv6, UDP behind IPv4 options,
 * an IPv4 fragment, UDP padded inside its IP packet with zeros and with other bytes, ICMP. Pods
 * 198.19.1.5 -> 198.19.2.7 and 2001:2:0:8001::5 -> 2001:2:0:8002::7.
 */
function lonePacket(kind: number, total: number, seed: number): Uint8Array {
  const src = 0xc6130105;
  const dst = 0xc6130207;
  const data = (n: number) => payloadOf(seed, n);
  const tcp = { srcPort: 40000, dstPort: 7000, seq: seed >>> 0, ack: 0, flags: 0x02, window: 100 };
  switch (kind) {
    case 0:
      return buildUdp4(src, dst, 40000, 9000, data(total - 28));
    case 1: {
      const p = buildUdp4(src, dst, 40000, 9000, data(total - 28));
      p[26] = 0;
      p[27] = 0;
      return p;
    }
    case 2:
      return buildTcp4({ src, dst, ...tcp, payload: data(total - 40) });
    case 3:
      return buildTcp6({
        src: 0x2001_0002_0000_8001_0000_0000_0000_0005n,
        dst: 0x2001_0002_0000_8002_0000_0000_0000_0007n,
        ...tcp,
        payload: data(total - 60),
      });
    case 4: {
      const options = Uint8Array.from([1, 1, 1, 1, 1, 1, 1, 0]);
      const udp = buildUdp4(src, dst, 40000, 9000, data(total - 36)).slice(20);
      return buildIpv4({ src, dst, protocol: 17, options, payload: udp });
    }
    case 5:
      return buildIpv4({ src, dst, protocol: 17, fragment: 0x2000, payload: data(total - 20) });
    case 6:
    case 7: {
      const udp = buildUdp4(src, dst, 40000, 9000, data(total - 34)).slice(20);
      const padding = kind === 6 ? [0, 0, 0, 0, 0, 0] : [1, 2, 3, 4, 5, 6];
      return buildIpv4({ src, dst, protocol: 17, payload: Uint8Array.from([...udp, ...padding]) });
    }
    default:
      return buildIpv4({ src, dst, protocol: 1, payload: data(total - 20) });
  }
}

describe("offloads, GRO keeps apart what the kernel's GRO keeps apart", () => {
  // Six full segments of one flow in one GRO receive (vxlan format); a change in segment 3 alone
  // or from it on must end the super-packet there, as the kernel's TCP GRO would.
  const SIZE = 1000;
  const TS = (val: number) => Uint8Array.from([1, 1, 8, 10, 0, 0, val >> 8, val & 255, 0, 0, 0, 9]);
  const tcp = (k: number) => ({
    srcPort: 40000,
    dstPort: 5201,
    seq: 5000 + k * SIZE,
    ack: 7000,
    flags: 0x10,
    window: 500,
    options: TS(1),
    payload: payloadOf(k, SIZE),
  });
  type Change4 = (f: Tcp4Fields, k: number) => Tcp4Fields;
  type Change6 = (f: Tcp6Fields, k: number) => Tcp6Fields;
  const from3 =
    <F>(change: (f: F) => F) =>
    (f: F, k: number) =>
      k >= 3 ? change(f) : f;
  const tcpChanges = <F extends Tcp4Fields | Tcp6Fields>(): Array<[string, (f: F, k: number) => F, number[]]> => [
    ["an ACK that moves on", from3<F>((f) => ({ ...f, ack: f.ack + 1460 })), [3, 3]],
    ["a window that changes", from3<F>((f) => ({ ...f, window: f.window + 1 })), [3, 3]],
    ["a timestamp option that changes", from3<F>((f) => ({ ...f, options: TS(2) })), [3, 3]],
    ["a gap in the sequence", from3<F>((f) => ({ ...f, seq: f.seq + SIZE })), [3, 3]],
  ];
  const cases4: Array<[string, Change4, number[]]> = [
    ["nothing (DF set)", (f) => f, [6]],
    ["nothing (DF clear, IDs counting up)", (f) => ({ ...f, df: false }), [6]],
    ["a CE mark on one segment", (f, k) => (k === 3 ? { ...f, tos: 3 } : f), [3, 1, 2]],
    ["a TTL that changes", from3((f) => ({ ...f, ttl: 63 })), [3, 3]],
    ["IDs that skip with DF clear", (f, k) => ({ ...f, df: false, id: k >= 3 ? f.id! + 10 : f.id }), [3, 3]],
    ...tcpChanges<Tcp4Fields>(),
  ];
  const cases6: Array<[string, Change6, number[]]> = [
    ["nothing", (f) => f, [6]],
    ["a CE mark on one segment", (f, k) => (k === 3 ? { ...f, trafficClass: 3 } : f), [3, 1, 2]],
    ["a flow label that changes", from3((f) => ({ ...f, flowLabel: 0x12345 })), [3, 3]],
    ["a hop limit that changes", from3((f) => ({ ...f, hopLimit: 63 })), [3, 3]],
    ...tcpChanges<Tcp6Fields>(),
  ];

  /** The segments sent as lone packets, their datagrams in one GRO receive: what the TUN device gets. */
  function throughGro(segments: Uint8Array[], rx: typeof RX, from6?: bigint) {
    const ds: Uint8Array[] = [];
    for (let i = 0; i < segments.length; i += 4) {
      const reads = segments.slice(i, i + 4).map((bytes) => ({ bytes, gsoSize: 0, gsoType: 0, needsCsum: false }));
      const { trains, mem } = send(reads, "vxlan");
      ds.push(...datagrams(trains, mem));
    }
    const out = receive([ds], "vxlan", rx, from6);
    return {
      sizes: out.map((o) => (o.gsoType === 0 ? 1 : Math.ceil((o.bytes.length - o.hdrLen) / o.gsoSize))),
      segments: resegment(out, verifiedSegments([ds], 22)),
    };
  }

  for (const [name, change, sizes] of cases4)
    it(`TCP over IPv4: ${name} gives super-packets of ${sizes.join(", ")} segments`, () => {
      const base = (k: number): Tcp4Fields => ({ src: 0xc6130105, dst: 0xc6130207, ...tcp(k), id: 100 + k, ttl: 64 });
      const segments = Array.from({ length: 6 }, (_, k) => buildTcp4(change(base(k), k)));
      expect(throughGro(segments, RX)).toEqual({ sizes, segments });
    });

  for (const [name, change, sizes] of cases6)
    it(`TCP over IPv6: ${name} gives super-packets of ${sizes.join(", ")} segments`, () => {
      const base = (k: number): Tcp6Fields => ({
        src: 0x2001_0002_0000_8001_0000_0000_0000_0005n,
        dst: 0x2001_0002_0000_8002_0000_0000_0000_0007n,
        ...tcp(k),
        flowLabel: 0x54321,
      });
      const segments = Array.from({ length: 6 }, (_, k) => buildTcp6(change(base(k), k)));
      expect(throughGro(segments, RX6, SENDER6)).toEqual({ sizes, segments });
    });
});

describe("offloads, lone packets of a GRO receive and of single datagrams", () => {
  it("hands lone TCP and UDP packets of GRO receives over with NEEDS_CSUM, every other one as it came", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 2, maxLength: 16 }),
        fc.integer({ min: 80, max: 1400 }),
        fc.integer(),
        (kinds, total, seed) => {
          const ips = kinds.map((k, i) => lonePacket(k, total, seed + i));
          const ds = ips.map((ip) => buildVxlan(1, MAC2, MAC1, ip[0] >> 4 === 6 ? 0x86dd : 0x0800, ip));
          for (const [runs, verified] of [
            [[ds], true],
            [ds.map((d) => [d]), false],
          ] as const) {
            const before = trustedCount();
            const out = receive(
              runs.map((r) => [...r]),
              "vxlan",
            );
            expect(out.length).toBe(ips.length);
            let trusted = 0n;
            out.forEach((o, i) => {
              const want = refLoneHeader(ips[i], verified);
              expect(o.gsoType).toBe(0);
              expect({ flags: o.flags, csumStart: o.csumStart, csumOffset: o.csumOffset }).toEqual(want);
              expect(want.flags ? completePartial(o.bytes, want.csumStart, want.csumOffset) : o.bytes).toEqual(ips[i]);
              if (want.flags) trusted++;
            });
            expect(trustedCount() - before).toBe(trusted);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
