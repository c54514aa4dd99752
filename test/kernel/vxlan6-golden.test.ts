// Golden vectors from the real kernel over IPv6: host A runs the Linux vxlan device as flannel
// sets up flannel-v6.<VNI> (IPv6 underlay, its own VTEP MAC, permanent neighbour and FDB entries,
// onlink route); host B is a plain UDP socket on [2001:2::2]:8472 standing where weft's dataplane
// would be. What the kernel sends must decapsulate to the exact inner IPv6 packets, our
// encapsulation of those packets must equal the kernel's bytes, and the kernel must accept what
// we encapsulate — sent by a UDP socket over IPv6, so with the UDP checksum the kernel's vxlan
// device insists on over IPv6 (udp6zerocsumrx is off) — and answer through its vxlan device.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { internetChecksum } from "../reference/checksum.js";
import { addrAt, addrBytes } from "../reference/packets6.js";
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { parseIpv6, parsePrefix6, readIpv6 } from "../../src/net/ipv6.js";
import { Netns, canUseNetns, vethPair } from "../support/netns.js";
import { decapInPlace, encapInPlace, loadBatch, makeRig, readBatch, type Rig } from "../support/hotpath.js";
import { udpPeer } from "../support/udp-peer.js";

const VNI = 1;
const A_UNDERLAY = parseIpv6("2001:2::1");
const B_UNDERLAY = parseIpv6("2001:2::2");
const A_SUBNET = parsePrefix6("2001:2:0:8001::/64"); // flannel-v6.1 gets its first address, /128
const B_SUBNET = parsePrefix6("2001:2:0:8002::/64");
const A_MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x01]);
const B_MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x02]);
const POD_B = parseIpv6("2001:2:0:8002::5");

/** A weft rig with IPv6 routes configured as host `self` with a route to the peer's subnet. */
function rigFor(
  selfMac: Uint8Array,
  selfTunnel: bigint,
  peerSubnet: typeof A_SUBNET,
  peerUnderlay: bigint,
  peerMac: Uint8Array,
): Rig {
  const rig = makeRig({ vni: VNI, localAddr: 0, mac: selfMac, ipv6: { localAddr: selfTunnel } });
  rig.routes6!.setNextHop(0, { ip: peerUnderlay, port: 8472, mac: peerMac });
  rig.routes6!.insert(peerSubnet, 0);
  return rig;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** ICMPv6 checksum of `icmp` between src and dst (RFC 8200 8.1 pseudo-header). */
function icmpv6Checksum(src: bigint, dst: bigint, icmp: Uint8Array): number {
  const pseudo = new Uint8Array(40 + icmp.length);
  pseudo.set(addrBytes(src));
  pseudo.set(addrBytes(dst), 16);
  pseudo.set(
    [icmp.length >>> 24, (icmp.length >> 16) & 255, (icmp.length >> 8) & 255, icmp.length & 255, 0, 0, 0, 58],
    32,
  );
  pseudo.set(icmp, 40);
  return internetChecksum(pseudo);
}

describe.skipIf(!canUseNetns())("VXLAN over IPv6 against the Linux kernel's flannel-v6 device", () => {
  let a: Netns;
  let b: Netns;

  beforeAll(async () => {
    a = await Netns.create("gold6-a");
    b = await Netns.create("gold6-b");
    await vethPair(a, "ul0", "2001:2::1/64 nodad", b, "ul0", "2001:2::2/64 nodad");
    await createVxlanDevice(a.kernel, {
      vni: VNI,
      dev: "ul0",
      local: A_UNDERLAY,
      port: 8472,
      subnet: A_SUBNET,
      vtepMac: A_MAC,
      mtu: 1430,
    });
    await addVxlanPeer(a.kernel, VNI, { subnet: B_SUBNET, underlay: B_UNDERLAY, vtepMac: B_MAC });
  });

  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
  });

  it("decapsulates the kernel's frames to the exact inner packets and encapsulates them to the kernel's bytes", async () => {
    const capture = udpPeer(b, { bind: "[2001:2::2]:8472", expect: 3, timeoutMs: 8000 });
    await capture.ready;
    const message = new TextEncoder().encode("hello from the kernel's flannel-v6");
    await a.exec([
      process.execPath,
      "-e",
      `
      const s = require("node:dgram").createSocket("udp6");
      s.send(Buffer.from(${JSON.stringify(hex(message))}, "hex"), 5555, "2001:2:0:8002::5", () => s.close());`,
    ]);
    await a
      .exec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "-s", "200", "2001:2:0:8002::5"])
      .catch(() => undefined); // nobody answers
    const frames = await capture.done;
    expect(frames.length).toBe(3);
    for (const f of frames) expect(f.from.startsWith("2001:2::1:")).toBe(true); // over the IPv6 underlay

    // Decapsulate all three in one batch, as host B.
    const asB = rigFor(B_MAC, B_SUBNET.addr, A_SUBNET, A_UNDERLAY, A_MAC);
    loadBatch(
      asB,
      frames.map((f) => f.bytes),
    );
    expect(decapInPlace(asB, "vxlan", frames.length)).toBe(3);
    const inner = readBatch(asB, 3)
      .sort((x, y) => x.slot - y.slot)
      .map((r) => r.bytes);
    inner.forEach((p, i) => {
      expect(hex(p)).toBe(hex(frames[i].bytes.subarray(22))); // exactly what the kernel carried
      expect(hex(frames[i].bytes.subarray(20, 22))).toBe("86dd");
      expect(p[0] >> 4).toBe(6);
      expect(addrAt(p, 8)).toBe(A_SUBNET.addr); // the kernel picks flannel-v6.1's address as source
      expect(addrAt(p, 24)).toBe(POD_B);
    });
    const udp = inner.find((p) => p[6] === 17)!;
    expect(hex(udp.subarray(48))).toBe(hex(message));
    const pings = inner.filter((p) => p[6] === 58);
    expect(pings.map((p) => p[40])).toEqual([128, 128]); // echo requests
    expect(pings.map((p) => p.length)).toEqual([248, 248]);

    // Encapsulate the same inner packets as host A: byte for byte the kernel's VXLAN payloads.
    const asA = rigFor(A_MAC, A_SUBNET.addr, B_SUBNET, B_UNDERLAY, B_MAC);
    loadBatch(asA, inner);
    expect(encapInPlace(asA, "vxlan", inner.length)).toBe(3);
    readBatch(asA, 3).forEach((r) => {
      expect(hex(r.bytes)).toBe(hex(frames[r.slot].bytes));
      expect([readIpv6(asA.hp.bytes(), r.addr), r.port]).toEqual([B_UNDERLAY, 8472]);
    });
  });

  it("has the kernel accept what we encapsulate and answer through its vxlan device", async () => {
    const asB = rigFor(B_MAC, B_SUBNET.addr, A_SUBNET, A_UNDERLAY, A_MAC);
    // An echo request from a pod behind B to A's flannel-v6.1 address.
    const icmp = new Uint8Array(64);
    icmp.set([128, 0, 0, 0, 0x12, 0x34, 0, 1]);
    icmp.set(new TextEncoder().encode("weft golden ping6"), 8);
    const c = icmpv6Checksum(POD_B, A_SUBNET.addr, icmp);
    icmp[2] = c >> 8;
    icmp[3] = c & 255;
    const echo = new Uint8Array(40 + icmp.length);
    echo.set([0x60, 0, 0, 0, 0, icmp.length, 58, 64]);
    echo.set(addrBytes(POD_B), 8);
    echo.set(addrBytes(A_SUBNET.addr), 24);
    echo.set(icmp, 40);
    loadBatch(asB, [echo]);
    expect(encapInPlace(asB, "vxlan", 1)).toBe(1);
    const [frame] = readBatch(asB, 1);

    const peer = udpPeer(b, {
      bind: "[2001:2::2]:8472",
      sendTo: "[2001:2::1]:8472",
      send: [frame.bytes],
      expect: 1,
      timeoutMs: 8000,
    });
    const [reply] = await peer.done;
    expect(reply).toBeDefined();
    loadBatch(asB, [reply.bytes]);
    expect(decapInPlace(asB, "vxlan", 1)).toBe(1);
    const [answer] = readBatch(asB, 1);
    const p = answer.bytes;
    expect([addrAt(p, 8), addrAt(p, 24), p[6], p[40]]).toEqual([A_SUBNET.addr, POD_B, 58, 129]); // echo reply back to the pod
    expect(hex(p.subarray(44))).toBe(hex(icmp.subarray(4))); // same id, sequence and data
    expect(icmpv6Checksum(A_SUBNET.addr, POD_B, p.subarray(40))).toBe(0);
  });
});
