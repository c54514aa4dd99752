// Golden vectors from the real kernel over IPv4 (the procedure: test/support/vxlan-golden.ts):
// flannel.1 on host A, a plain UDP socket on 198.18.0.2:8472 as host B.
import { expect } from "vitest";
import { buildIpv4 } from "../reference/build.js";
import { internetChecksum } from "../reference/checksum.js";
import { goldenSuite } from "../support/vxlan-golden.js";

const A_UNDERLAY = 0xc6120001; // 198.18.0.1
const B_UNDERLAY = 0xc6120002; // 198.18.0.2
const A_SUBNET = { addr: 0xc6130100, len: 24 }; // flannel.1 gets 198.19.1.0/32
const B_SUBNET = { addr: 0xc6130200, len: 24 };
const A_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x01, 0x00]);
const B_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x02, 0x00]);
const POD_B = 0xc6130205; // 198.19.2.5, a pod address behind B

const u32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

goldenSuite({
  title: "VXLAN against the Linux kernel's vxlan device",
  tag: "gold",
  veth: ["198.18.0.1/24", "198.18.0.2/24"],
  endpoints: { a: "198.18.0.1:8472", b: "198.18.0.2:8472" },
  device: { local: A_UNDERLAY, subnet: A_SUBNET, mtu: 1450 },
  peer: { subnet: B_SUBNET, underlay: B_UNDERLAY },
  macs: { a: A_MAC, b: B_MAC },
  podB: "198.19.2.5",
  udpSocket: "udp4",
  ping: ["ping"],
  checkInner: (p) => {
    expect(u32(p, 12)).toBe(A_SUBNET.addr); // the kernel picks flannel.1's address as source
    expect(u32(p, 16)).toBe(POD_B);
    expect(internetChecksum(p.subarray(0, 20))).toBe(0);
  },
  protocol: (p) => (p[9] === 17 ? "udp" : p[9] === 1 ? "ping" : "other"),
  udpPayloadAt: 28,
  echoRequestType: 8,
  icmpTypeAt: 20,
  pingLength: 228,
  underlayOf: (_, r) => r.addr,
  echoRequest: (text) => {
    const icmp = new Uint8Array(64);
    icmp.set([8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    icmp.set(new TextEncoder().encode(text), 8);
    const c = internetChecksum(icmp);
    icmp[2] = c >> 8;
    icmp[3] = c & 255;
    return { packet: buildIpv4({ src: POD_B, dst: A_SUBNET.addr, protocol: 1, ttl: 64, id: 7, payload: icmp }), icmp };
  },
  checkEchoReply: (p, icmp) => {
    expect([u32(p, 12), u32(p, 16), p[9], p[20]]).toEqual([A_SUBNET.addr, POD_B, 1, 0]); // echo reply back to the pod
    expect(hex(p.subarray(24))).toBe(hex(icmp.subarray(4))); // same id, sequence and data
  },
});
