// Golden vectors from the real kernel over IPv6 (the procedure: test/support/vxlan-golden.ts):
// host A runs flannel-v6.<VNI> as flannel sets it up (IPv6 underlay, its own VTEP MAC, permanent
// neighbour and FDB entries, onlink route), host B is a plain UDP socket on [2001:2::2]:8472. What
// we encapsulate leaves through a UDP socket over IPv6, so with the UDP checksum the kernel's
// vxlan device insists on over IPv6 (udp6zerocsumrx is off).
import { expect } from "vitest";
import { internetChecksum } from "../reference/checksum.js";
import { addrAt, addrBytes } from "../reference/packets6.js";
import { parseIpv6, parsePrefix6, readIpv6 } from "../../src/net/ipv6.js";
import { goldenSuite } from "../support/vxlan-golden.js";

const A_UNDERLAY = parseIpv6("2001:2::1");
const B_UNDERLAY = parseIpv6("2001:2::2");
const A_SUBNET = parsePrefix6("2001:2:0:8001::/64"); // flannel-v6.1 gets its first address, /128
const B_SUBNET = parsePrefix6("2001:2:0:8002::/64");
const A_MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x01]);
const B_MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x02]);
const POD_B = parseIpv6("2001:2:0:8002::5");

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

goldenSuite({
  title: "VXLAN over IPv6 against the Linux kernel's flannel-v6 device",
  tag: "gold6",
  veth: ["2001:2::1/64 nodad", "2001:2::2/64 nodad"],
  endpoints: { a: "[2001:2::1]:8472", b: "[2001:2::2]:8472" },
  device: { local: A_UNDERLAY, subnet: A_SUBNET, mtu: 1430 },
  peer: { subnet: B_SUBNET, underlay: B_UNDERLAY },
  macs: { a: A_MAC, b: B_MAC },
  podB: "2001:2:0:8002::5",
  udpSocket: "udp6",
  ping: ["ping", "-6"],
  checkSender: (from) => expect(from.startsWith("2001:2::1:")).toBe(true), // over the IPv6 underlay
  checkInner: (p, frame) => {
    expect(hex(frame.subarray(20, 22))).toBe("86dd");
    expect(p[0] >> 4).toBe(6);
    expect(addrAt(p, 8)).toBe(A_SUBNET.addr); // the kernel picks flannel-v6.1's address as source
    expect(addrAt(p, 24)).toBe(POD_B);
  },
  protocol: (p) => (p[6] === 17 ? "udp" : p[6] === 58 ? "ping" : "other"),
  udpPayloadAt: 48,
  echoRequestType: 128,
  icmpTypeAt: 40,
  pingLength: 248,
  underlayOf: (rig, r) => readIpv6(rig.hp.bytes(), r.addr),
  echoRequest: (text) => {
    const icmp = new Uint8Array(64);
    icmp.set([128, 0, 0, 0, 0x12, 0x34, 0, 1]);
    icmp.set(new TextEncoder().encode(text), 8);
    const c = icmpv6Checksum(POD_B, A_SUBNET.addr, icmp);
    icmp[2] = c >> 8;
    icmp[3] = c & 255;
    const packet = new Uint8Array(40 + icmp.length);
    packet.set([0x60, 0, 0, 0, 0, icmp.length, 58, 64]);
    packet.set(addrBytes(POD_B), 8);
    packet.set(addrBytes(A_SUBNET.addr), 24);
    packet.set(icmp, 40);
    return { packet, icmp };
  },
  checkEchoReply: (p, icmp) => {
    expect([addrAt(p, 8), addrAt(p, 24), p[6], p[40]]).toEqual([A_SUBNET.addr, POD_B, 58, 129]); // echo reply back to the pod
    expect(hex(p.subarray(44))).toBe(hex(icmp.subarray(4))); // same id, sequence and data
    expect(icmpv6Checksum(A_SUBNET.addr, POD_B, p.subarray(40))).toBe(0);
  },
});
