// The gossip record's decoding: a record a peer's backend could not use makes no peer. A family
// without a backend (NO_BACKEND) reads as such here, and as its last announcement to agents
// released before NO_BACKEND (test/reference/node-record-v1.ts), which keep the other family.
import { describe, expect, it } from "vitest";
import { encode } from "@msgpack/msgpack";
import type { BackendAnnouncement } from "../../src/backends/backend.js";
import { encodeLeaseMeta } from "../../src/control/lease/delegate.js";
import { decodeNodeRecord, encodeNodeRecord, NO_BACKEND } from "../../src/control/node-record.js";
import { refDecodeNodeRecordV1 } from "../reference/node-record-v1.js";

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

  // One of each backend type's announcements, as the backends make them (vxlan with and without GBP).
  const KINDS: Array<[string, BackendAnnouncement, BackendAnnouncement]> = [
    [
      "vxlan",
      { type: "vxlan", vtepMac: "02:00:00:00:00:01", port: 8472, vni: 1 },
      { type: "vxlan", vtepMac: "02:00:00:00:00:02", port: 8472, vni: 1 },
    ],
    [
      "wasm-vxlan",
      { type: "wasm-vxlan", vtepMac: "02:00:00:00:00:01", port: 8472, vni: 7 },
      { type: "wasm-vxlan", vtepMac: "02:00:00:00:00:02", port: 8473, vni: 7 },
    ],
    ["udp", UDP, { type: "udp", port: 8286 }],
    ["host-gw", { type: "host-gw" }, { type: "host-gw" }],
  ];
  const U6 = "2001:2::1";

  it.each(KINDS)(
    "%s, dual-stack, one family down: NO_BACKEND here; an older agent keeps the other family and the down one's last announcement",
    (_, a4, a6) => {
      const last = { v4: a4, v6: a6 };
      const down4 = encodeNodeRecord(LEASE, NO_BACKEND, { underlay: U6, backend: a6 }, last);
      const down6 = encodeNodeRecord(LEASE, a4, { underlay: U6, backend: NO_BACKEND }, last);
      const both = { subnet: "198.19.1.0/24", subnet6: "2001:2:0:8001::/64", underlay6: U6 };
      expect(decodeNodeRecord(down4)).toEqual({ ...both, backend: NO_BACKEND, backend6: a6 });
      expect(decodeNodeRecord(down6)).toEqual({ ...both, backend: a4, backend6: NO_BACKEND });
      // The older agent's view is the one it had while the family ran: nothing changes for it.
      const up = refDecodeNodeRecordV1(encodeNodeRecord(LEASE, a4, { underlay: U6, backend: a6 }));
      expect(up).toEqual({ ...both, backend: a4, backend6: a6 });
      expect(refDecodeNodeRecordV1(down4)).toEqual(up);
      expect(refDecodeNodeRecordV1(down6)).toEqual(up);
    },
  );

  it("vxlan with GBP, one family down: older agents read the down family without GBP (it no longer matches theirs: no peer of that family), and the other one whole", () => {
    const [a4, a6] = [KINDS[0][1], KINDS[0][2]].map((a) => ({ ...a, gbp: true }));
    const record = encodeNodeRecord(LEASE, a4, { underlay: U6, backend: NO_BACKEND }, { v4: a4, v6: a6 });
    expect(decodeNodeRecord(record)).toMatchObject({ backend: a4, backend6: NO_BACKEND });
    const { gbp: _, ...withoutGbp } = a6;
    expect(refDecodeNodeRecordV1(record)).toMatchObject({ backend: a4, backend6: withoutGbp });
  });

  it("a family down that never ran shows older agents the other family's backend type alone; with no type known (no family ran) the record says false, which they refuse", () => {
    const record = encodeNodeRecord(LEASE, NO_BACKEND, { underlay: U6, backend: UDP }, { v6: UDP });
    expect(decodeNodeRecord(record)).toMatchObject({ backend: NO_BACKEND, backend6: UDP });
    expect(refDecodeNodeRecordV1(record)).toMatchObject({ backend: { type: "udp" }, backend6: UDP });
    for (const none of [
      encodeNodeRecord(LEASE, NO_BACKEND),
      encodeNodeRecord(LEASE, NO_BACKEND, { underlay: U6, backend: NO_BACKEND }),
    ]) {
      expect(decodeNodeRecord(none)).toMatchObject({ backend: NO_BACKEND });
      expect(refDecodeNodeRecordV1(none)).toBeUndefined();
    }
  });

  it('the wire, byte for byte: a down family is its last announcement with "none" for GBP; false (the first NO_BACKEND agents\') still reads as NO_BACKEND', () => {
    const lease = encodeLeaseMeta("198.19.1.0/24");
    const bytes = encodeNodeRecord(lease, NO_BACKEND, undefined, { v4: UDP });
    // [1, bin [1, "198.19.1.0/24"], ["udp", null, 8285, null, "none"]]
    expect(Buffer.from(bytes).toString("hex")).toBe(
      "9301c4109201ad3139382e31392e312e302f323495a3756470c0cd205dc0a46e6f6e65",
    );
    expect(decodeNodeRecord(encode([1, lease, false]))).toEqual({ subnet: "198.19.1.0/24", backend: NO_BACKEND });
    expect(decodeNodeRecord(encode([1, LEASE, ["udp", null, 8285, null, null], U6, false]))).toMatchObject({
      backend: UDP,
      backend6: NO_BACKEND,
    });
  });
});
