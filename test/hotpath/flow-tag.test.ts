// The send path tags each packet it sends as a single datagram with its inner flow (FLAGS above
// DESC_FLOW_TAG_SHIFT), so that the addon's GSO trains carry one flow each: the peer's reuseport
// program steers a whole train by its first datagram. Differential against the reference hash
// (test/reference/flow-queue.ts), which the flow queue's buckets share.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { buildIpv4 } from "../reference/build.js";
import { refFlowTag } from "../reference/flow-queue.js";
import { buildUdp } from "../reference/udp-offload.js";
import { send, TX, type Format } from "../support/offload.js";

const SRC = 0xc6130105; // 198.19.1.5
const DST = 0xc6130207; // 198.19.2.7, routed to PEER
const SRC6 = 0x2001_0002_0000_8001_0000_0000_0000_0005n;
const DST6 = 0x2001_0002_0000_8002_0000_0000_0000_0009n; // routed to PEER6

/** An ICMP echo request of identifier `id` and sequence `seq`. */
const echo = (id: number, seq: number) =>
  buildIpv4({
    src: SRC,
    dst: DST,
    protocol: 1,
    payload: Uint8Array.from([8, 0, 0, 0, id >> 8, id & 255, seq >> 8, seq & 255, 1, 2]),
  });

/** A TUN read of a packet whose checksum the pod's kernel finished. */
const lone = (bytes: Uint8Array) => ({ bytes, gsoSize: 0, gsoType: 0, needsCsum: false });

/** Each packet's send, in batches as large as the rig's: one datagram each, in order; their flow tags. */
function tags(packets: Uint8Array[], format: Format): number[] {
  const shift = TX.rig.hp.constant("DESC_FLOW_TAG_SHIFT");
  const out: number[] = [];
  for (let at = 0; at < packets.length; at += TX.rig.batch.size) {
    const batch = packets.slice(at, at + TX.rig.batch.size);
    const { trains } = send(batch.map(lone), format);
    expect(trains.length).toBe(batch.length);
    for (const t of trains) expect(t.flags & 0xffff).toBe(0);
    out.push(...trains.map((t) => t.flags >>> shift));
  }
  return out;
}

const udpPacket = fc.record({
  v6: fc.boolean(),
  srcPort: fc.constantFrom(1000, 1002, 40000),
  dstPort: fc.constantFrom(53, 5201),
  host: fc.integer({ min: 1, max: 3 }),
  size: fc.integer({ min: 0, max: 1200 }),
});

describe("flow tags of single datagrams", () => {
  for (const format of ["vxlan", "udp"] as const) {
    it(`tags every datagram with its inner flow's hash, as the reference does (${format}, property)`, () => {
      fc.assert(
        fc.property(fc.array(udpPacket, { minLength: 1, maxLength: 12 }), (ps) => {
          // flannel's udp format carries IPv4 only.
          const packets = ps.map(({ v6, ...p }) =>
            buildUdp({
              src: v6 && format === "vxlan" ? SRC6 + BigInt(p.host) : SRC + p.host,
              dst: v6 && format === "vxlan" ? DST6 : DST,
              srcPort: p.srcPort,
              dstPort: p.dstPort,
              payload: new Uint8Array(p.size),
            }),
          );
          const got = tags(packets, format);
          packets.forEach((p, i) => {
            expect(got[i]).not.toBe(0);
            // flannel udp decrements the TTL before the send; the flow stays the same.
            expect(got[i]).toBe(refFlowTag(p));
          });
        }),
        { numRuns: 200 },
      );
    });
  }

  it("gives a ping's echoes one tag and another ping, or another port, a different one", () => {
    const got = tags(
      [
        echo(7, 1),
        echo(7, 2),
        echo(8, 1),
        buildUdp({ src: SRC, dst: DST, srcPort: 1000, dstPort: 53, payload: new Uint8Array(10) }),
        buildUdp({ src: SRC, dst: DST, srcPort: 1000, dstPort: 53, payload: new Uint8Array(90) }),
        buildUdp({ src: SRC, dst: DST, srcPort: 1002, dstPort: 53, payload: new Uint8Array(10) }),
      ],
      "vxlan",
    );
    expect(got[0]).toBe(got[1]);
    expect(got[2]).not.toBe(got[0]);
    expect(got[3]).toBe(got[4]);
    expect(got[5]).not.toBe(got[3]);
  });
});
