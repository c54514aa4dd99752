// Differential tests of UDP coalescing on the receive path (assembly/packet/udp-coalesce.ts, with a
// TUN device that takes USO): random UDP flows (equal, shorter-last or mixed sizes; IPv4 IDs
// counting up or fixed, with and without DF; datagrams without a checksum), interleaved and
// batched as UDP GRO would, must come out as USO super-packets and lone datagrams that, cut again
// as the kernel cuts them (test/reference/udp-offload.ts), give back every datagram in order per
// flow, byte for byte (for DF datagrams the IPv4 ID aside: an atomic datagram's ID means nothing,
// and segmentation writes counting IDs).
import fc from "fast-check";
import { GRO_MAXES, PICKS } from "../support/arbitraries.js";
import { describe, expect, it } from "vitest";
import { buildVxlan } from "../reference/build.js";
import { completePartial, pseudoHeaderSum, pseudoHeaderSum6, refLoneHeader } from "../reference/tcp-offload.js";
import { buildUdp, refSegmentUdp, type UdpFields } from "../reference/udp-offload.js";
import {
  groRuns,
  interleave,
  MAC1,
  MAC2,
  payloadOf,
  receive,
  RX,
  RX6_USO,
  RX_USO,
  SENDER6,
  type Format,
} from "../support/offload.js";

const SRC = 0xc6130105; // 198.19.1.5
const DST = 0xc6130207; // 198.19.2.7

/** The payload with its datagram's index in the first two bytes, so that no two datagrams of a flow are alike. */
const numbered = (k: number, payload: Uint8Array) => {
  payload[0] = k >> 8;
  payload[1] = k & 255;
  return payload;
};

/** One flow's datagrams, as its socket sends them. */
const udpFlow = fc
  .record({
    srcPort: fc.integer({ min: 1024, max: 65535 }),
    id: fc.integer({ min: 0, max: 0xffff }),
    idStep: fc.constantFrom(0, 1),
    df: fc.boolean(),
    ttl: fc.integer({ min: 3, max: 255 }),
    tos: fc.constantFrom(0, 0x10),
    size: fc.integer({ min: 2, max: 1400 }),
    count: fc.integer({ min: 1, max: 70 }),
    shape: fc.constantFrom("equal", "shorter last", "mixed"),
    noChecksumAt: fc.integer({ min: -8, max: 69 }), // below 0: every datagram has a checksum
    seed: fc.integer(),
  })
  .map((g) =>
    Array.from({ length: g.count }, (_, k): UdpFields => {
      let size = g.size;
      if (g.shape === "shorter last" && k === g.count - 1) size = Math.max(2, g.size >> 1);
      if (g.shape === "mixed") size = 2 + (((g.seed + k * 7919) >>> 0) % 1399);
      return {
        src: SRC,
        dst: DST,
        srcPort: g.srcPort,
        dstPort: 9000,
        id: (g.id + k * g.idStep) & 0xffff,
        df: g.df,
        ttl: g.ttl,
        tos: g.tos,
        checksum: k !== g.noChecksumAt,
        payload: numbered(k, payloadOf(g.seed + k, size)),
      };
    }),
  );

const header = (format: Format) => (format === "vxlan" ? 22 : 0);
const wire = (ip: Uint8Array, format: Format) =>
  format === "vxlan" ? buildVxlan(1, MAC2, MAC1, ip[0] >> 4 === 6 ? 0x86dd : 0x0800, ip) : ip;

/**
 * A datagram's identity across hops and headers: the TTL, the IPv4 header checksum and the UDP
 * checksum field (rewritten as NEEDS_CSUM's pseudo-header sum) zeroed, and the ID too with DF set.
 */
function key(ip: Uint8Array): string {
  const q = ip.slice();
  q[8] = q[10] = q[11] = q[26] = q[27] = 0;
  if (q[6] & 0x40) q[4] = q[5] = 0;
  return Buffer.from(q).toString("hex");
}

/** The pseudo-header sum of the UDP datagram or super-packet (not inverted). */
function udpPseudoSum(ip: Uint8Array): number {
  const l3 = ip[0] >> 4 === 6 ? 40 : 20;
  return l3 === 40 ? pseudoHeaderSum6(ip, 17, ip.length - 40) : pseudoHeaderSum(ip, 17, ip.length - 20);
}

/** What the TUN device gets, as datagrams again: USO super-packets cut by the reference, lone ones finished. */
function resegment(out: ReturnType<typeof receive>, verified: Set<string>): Uint8Array[] {
  return out.flatMap((o) => {
    if (o.gsoType === 0) {
      const want = refLoneHeader(o.bytes, verified.has(key(o.bytes)));
      expect({ flags: o.flags, csumStart: o.csumStart, csumOffset: o.csumOffset }).toEqual(want);
      return [want.flags ? completePartial(o.bytes, want.csumStart, want.csumOffset) : o.bytes];
    }
    const l3 = o.bytes[0] >> 4 === 6 ? 40 : 20;
    expect({ flags: o.flags, gsoType: o.gsoType, csumStart: o.csumStart, csumOffset: o.csumOffset }).toEqual({
      flags: 1,
      gsoType: 5,
      csumStart: l3,
      csumOffset: 6,
    });
    expect(o.hdrLen).toBe(l3 + 8);
    expect(o.bytes.length - l3 - 8).toBeGreaterThan(o.gsoSize); // at least two datagrams
    // NEEDS_CSUM: the field holds the pseudo-header sum, from which segmentation derives each datagram's.
    expect((o.bytes[l3 + 6] << 8) | o.bytes[l3 + 7]).toBe(udpPseudoSum(o.bytes));
    return refSegmentUdp(o.bytes, o.gsoSize);
  });
}

/** A DF datagram with its ID as segmentation gives it does not change; compare the rest. */
const normalized = (ip: Uint8Array) => {
  const q = ip.slice();
  if (q[6] & 0x40) {
    q[4] = q[5] = q[10] = q[11] = 0;
  }
  return q;
};

for (const format of ["vxlan", "udp"] as const) {
  describe(`UDP coalescing for a USO TUN device, ${format} format`, () => {
    it("merges the datagrams of interleaved flows, batched as UDP GRO, into USO super-packets that cut back into them", () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(udpFlow, { minLength: 1, maxLength: 3, selector: (f) => f[0].srcPort }),
          PICKS,
          GRO_MAXES,
          (flows, picks, maxes) => {
            const ips = flows.map((f) => f.map(buildUdp));
            const runs = groRuns(
              interleave(
                ips.map((l) => l.map((ip) => wire(ip, format))),
                picks,
              ),
              maxes,
            ).slice(0, 16);
            const sent = runs.flat().map((d) => d.subarray(header(format)));
            const verifiedRuns = runs.filter((r) => r.length > 1).flat();
            const verified = new Set(verifiedRuns.map((d) => key(d.subarray(header(format)))));
            const before = RX_USO.rig.ctx.rx().checksumTrusted;
            const out = receive(runs, format, RX_USO);
            const got = resegment(out, verified);
            // Every datagram of a GRO receive that has a checksum went on without our check.
            const withSum = verifiedRuns.filter((d) => {
              const ip = d.subarray(header(format));
              return ((ip[26] << 8) | ip[27]) !== 0;
            });
            expect(RX_USO.rig.ctx.rx().checksumTrusted - before).toBe(BigInt(withSum.length));
            // flannel udp decrements the TTL on receive.
            const hops = format === "udp" ? 1 : 0;
            for (const f of flows) {
              const mine = (ip: Uint8Array) => ((ip[20] << 8) | ip[21]) === f[0].srcPort;
              const count = sent.filter(mine).length;
              const want = f.slice(0, count).map((d) => normalized(buildUdp({ ...d, ttl: d.ttl! - hops })));
              expect(got.filter(mine).map(normalized)).toEqual(want);
            }
            // Without USO, no UDP datagram is merged.
            const plain = receive(runs, format, RX);
            expect(plain.every((o) => o.gsoType === 0)).toBe(true);
            expect(plain.length).toBe(sent.length);
            // A flow alone in one GRO receive, of equal sizes and with checksums, is merged.
            const f = flows[0];
            const whole = f.every((d) => d.payload.length === f[0].payload.length && d.checksum);
            const countsUp = f.every((d, k) => d.df || d.id === (f[0].id! + k) % 65536);
            if (flows.length === 1 && runs.length === 1 && f.length > 1 && whole && countsUp)
              expect(out.length).toBeLessThan(f.length);
          },
        ),
        { numRuns: 40 },
      );
    });
  });
}

describe("UDP coalescing, checks", () => {
  /** n datagrams of one flow, IDs counting up from 100, payload k of sizes[k] (default 1,000) bytes. */
  const flow = (n: number, sizes: number[] = []) =>
    Array.from({ length: n }, (_, k) =>
      buildUdp({
        src: SRC,
        dst: DST,
        srcPort: 40000,
        dstPort: 9000,
        id: 100 + k,
        payload: payloadOf(k, sizes[k] ?? 1000),
      }),
    );

  it("never merges a damaged datagram of a single-datagram receive: it reaches the kernel alone, to be dropped there", () => {
    const ips = flow(6);
    const bad = ips[2].slice();
    bad[500] ^= 0x40;
    const runs = [ips[0], ips[1], bad, ips[3], ips[4], ips[5]].map((ip) => [wire(ip, "vxlan")]);
    const out = receive(runs, "vxlan", RX_USO);
    expect(out.map((o) => o.gsoType)).toEqual([5, 0, 5]);
    expect(out[1]).toMatchObject({ flags: 0, csumStart: 0, csumOffset: 0, bytes: bad });
    expect(refSegmentUdp(out[0].bytes, 1000)).toEqual(ips.slice(0, 2));
    expect(refSegmentUdp(out[2].bytes, 1000)).toEqual(ips.slice(3));
  });

  it("ends a super-packet at 64 datagrams, at 65,535 bytes, at a shorter datagram, and where IDs without DF stop counting", () => {
    const small = flow(70, Array(70).fill(100));
    expect(
      receive(
        [small.slice(0, 64), small.slice(64)].map((r) => r.map((ip) => wire(ip, "vxlan"))),
        "vxlan",
        RX_USO,
      ).map((o) => o.bytes.length),
    ).toEqual([28 + 64 * 100, 28 + 6 * 100]);
    const big = flow(64, Array(64).fill(1400));
    // 46 datagrams of 1,400 bytes fit 65,535 bytes of IPv4 packet (28 + 46 * 1400 = 64,428), 47
    // do not. Two GRO receives, since one holds at most 64 KB; a super-packet may span them.
    const runs = [big.slice(0, 40), big.slice(40)].map((r) => r.map((ip) => wire(ip, "vxlan")));
    expect(receive(runs, "vxlan", RX_USO).map((o) => o.bytes.length)).toEqual([28 + 46 * 1400, 28 + 18 * 1400]);
    // ID 999 breaks the count: [0..2] merged, [3] alone, [4, 5] merged.
    const gap = flow(6);
    gap[3] = buildUdp({ src: SRC, dst: DST, srcPort: 40000, dstPort: 9000, id: 999, payload: payloadOf(3, 1000) });
    expect(receive([gap.map((ip) => wire(ip, "vxlan"))], "vxlan", RX_USO).map((o) => o.gsoType)).toEqual([5, 0, 5]);
    // A shorter datagram ends its super-packet, even when the next receive goes on with the flow.
    const shorter = flow(5, [1000, 1000, 500, 1000, 1000]);
    const out = receive(
      [shorter.slice(0, 3), shorter.slice(3)].map((r) => r.map((ip) => wire(ip, "vxlan"))),
      "vxlan",
      RX_USO,
    );
    expect(out.map((o) => o.bytes.length)).toEqual([28 + 2500, 28 + 2000]);
    expect(out.flatMap((o) => refSegmentUdp(o.bytes, o.gsoSize))).toEqual(shorter);
  });

  it("merges UDP over IPv6 from an IPv6 peer, source-checked, into a USO super-packet", () => {
    const ips = Array.from({ length: 10 }, (_, k) =>
      buildUdp({
        src: 0x2001_0002_0000_8001_0000_0000_0000_0005n,
        dst: 0x2001_0002_0000_8002_0000_0000_0000_0007n,
        srcPort: 40000,
        dstPort: 9000,
        payload: payloadOf(k, 1200),
      }),
    );
    const out = receive([ips.map((ip) => wire(ip, "vxlan"))], "vxlan", RX6_USO, SENDER6);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ flags: 1, gsoType: 5, gsoSize: 1200, hdrLen: 48, csumStart: 40, csumOffset: 6 });
    expect(refSegmentUdp(out[0].bytes, 1200)).toEqual(ips);
  });
});
