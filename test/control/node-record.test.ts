// The gossip record's decoding: a record a peer's backend could not use makes no peer.
import { describe, expect, it } from "vitest";
import { encodeLeaseMeta } from "../../src/control/lease/delegate.js";
import { decodeNodeRecord, encodeNodeRecord } from "../../src/control/node-record.js";

const LEASE = encodeLeaseMeta("198.19.1.0/24", "2001:2:0:8001::/64");
const UDP = { type: "udp", port: 8285 } as const;

describe("node record", () => {
  it("round-trips a dual-stack record", () => {
    const v6 = {
      underlay: "2001:2::1",
      backend: { type: "vxlan", vtepMac: "02:00:00:00:00:01", vni: 1, port: 8472 } as const,
    };
    expect(decodeNodeRecord(encodeNodeRecord(LEASE, UDP, v6))).toEqual({
      subnet: "198.19.1.0/24",
      subnet6: "2001:2:0:8001::/64",
      backend: UDP,
      underlay6: "2001:2::1",
      backend6: v6.backend,
    });
  });

  it("refuses an announced port outside 1..65535 (a peer's sends to it would all fail)", () => {
    for (const port of [0, 65536, 70000, -1, 8285.5]) {
      expect(decodeNodeRecord(encodeNodeRecord(LEASE, { ...UDP, port })), `IPv4 ${port}`).toBeUndefined();
      expect(
        decodeNodeRecord(encodeNodeRecord(LEASE, UDP, { underlay: "2001:2::1", backend: { ...UDP, port } })),
        `IPv6 ${port}`,
      ).toBeUndefined();
    }
    for (const port of [1, 65535])
      expect(decodeNodeRecord(encodeNodeRecord(LEASE, { ...UDP, port }))?.backend).toEqual({ ...UDP, port });
  });
});
