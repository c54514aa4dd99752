// Golden vectors from the real kernel: host A runs the Linux vxlan device exactly as flannel sets
// it up; host B is a plain UDP socket on port 8472 standing where weft's dataplane would be.
// What the kernel sends must decapsulate to the exact inner packets, our encapsulation of those
// packets must equal the kernel's bytes, and the kernel must accept what we encapsulate.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildIpv4 } from "../reference/build.js";
import { internetChecksum } from "../reference/checksum.js";
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { Netns, canUseNetns, vethPair } from "../support/netns.js";
import { decapInPlace, encapInPlace, loadBatch, makeRig, readBatch, type Rig } from "../support/hotpath.js";
import { udpPeer } from "../support/udp-peer.js";

const VNI = 1;
const A_UNDERLAY = 0xc6120001; // 198.18.0.1
const B_UNDERLAY = 0xc6120002; // 198.18.0.2
const A_TUNNEL = 0xc6130100; // 198.19.1.0, flannel.1's /32
const B_TUNNEL = 0xc6130200; // 198.19.2.0
const A_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x01, 0x00]);
const B_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x02, 0x00]);
const POD_B = 0xc6130205; // 198.19.2.5, a pod address behind B

/** A weft rig configured as host `self` with a route to `peer`'s subnet. */
function rigFor(
  selfMac: Uint8Array,
  selfTunnel: number,
  peerSubnet: number,
  peerUnderlay: number,
  peerMac: Uint8Array,
): Rig {
  const rig = makeRig({ vni: VNI, localAddr: selfTunnel, mac: selfMac });
  rig.routes.setNextHop(0, { ip: peerUnderlay, port: 8472, mac: peerMac });
  rig.routes.insert({ addr: peerSubnet, len: 24 }, 0);
  return rig;
}

const u32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe.skipIf(!canUseNetns())("VXLAN against the Linux kernel's vxlan device", () => {
  let a: Netns;
  let b: Netns;

  beforeAll(async () => {
    a = await Netns.create("gold-a");
    b = await Netns.create("gold-b");
    await vethPair(a, "ul0", "198.18.0.1/24", b, "ul0", "198.18.0.2/24");
    await createVxlanDevice(a.kernel, {
      vni: VNI,
      dev: "ul0",
      local: A_UNDERLAY,
      port: 8472,
      subnet: { addr: A_TUNNEL, len: 24 },
      vtepMac: A_MAC,
      mtu: 1450,
    });
    await addVxlanPeer(a.kernel, VNI, { subnet: { addr: B_TUNNEL, len: 24 }, underlay: B_UNDERLAY, vtepMac: B_MAC });
  });

  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
  });

  it("decapsulates the kernel's frames to the exact inner packets and encapsulates them to the kernel's bytes", async () => {
    const capture = udpPeer(b, { bind: "198.18.0.2:8472", expect: 3, timeoutMs: 8000 });
    await capture.ready;
    const message = new TextEncoder().encode("hello from the kernel's vxlan");
    await a.exec([
      process.execPath,
      "-e",
      `
      const s = require("node:dgram").createSocket("udp4");
      s.send(Buffer.from(${JSON.stringify(hex(message))}, "hex"), 5555, "198.19.2.5", () => s.close());`,
    ]);
    await a.exec(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-s", "200", "198.19.2.5"]).catch(() => undefined); // nobody answers
    const frames = await capture.done;
    expect(frames.length).toBe(3);

    // Decapsulate all three in one batch, as host B.
    const asB = rigFor(B_MAC, B_TUNNEL, 0xc6130100, A_UNDERLAY, A_MAC);
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
      expect(u32(p, 12)).toBe(A_TUNNEL); // the kernel picks flannel.1's address as source
      expect(u32(p, 16)).toBe(POD_B);
      expect(internetChecksum(p.subarray(0, 20))).toBe(0);
    });
    const udp = inner.find((p) => p[9] === 17)!;
    expect(hex(udp.subarray(28))).toBe(hex(message));
    const pings = inner.filter((p) => p[9] === 1);
    expect(pings.map((p) => p[20])).toEqual([8, 8]);
    expect(pings.map((p) => p.length)).toEqual([228, 228]);

    // Encapsulate the same inner packets as host A: byte for byte the kernel's VXLAN payloads.
    const asA = rigFor(A_MAC, A_TUNNEL, 0xc6130200, B_UNDERLAY, B_MAC);
    loadBatch(asA, inner);
    expect(encapInPlace(asA, "vxlan", inner.length)).toBe(3);
    const ours = readBatch(asA, 3);
    ours.forEach((r) => {
      expect(hex(r.bytes)).toBe(hex(frames[r.slot].bytes));
      expect([r.addr, r.port]).toEqual([B_UNDERLAY, 8472]);
    });
  });

  it("has the kernel accept what we encapsulate and answer through its vxlan device", async () => {
    const asB = rigFor(B_MAC, B_TUNNEL, 0xc6130100, A_UNDERLAY, A_MAC);
    // An echo request from a pod behind B to A's flannel.1 address.
    const icmp = new Uint8Array(64);
    icmp.set([8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    icmp.set(new TextEncoder().encode("weft golden ping"), 8);
    const c = internetChecksum(icmp);
    icmp[2] = c >> 8;
    icmp[3] = c & 255;
    const echo = buildIpv4({ src: POD_B, dst: A_TUNNEL, protocol: 1, ttl: 64, id: 7, payload: icmp });
    loadBatch(asB, [echo]);
    expect(encapInPlace(asB, "vxlan", 1)).toBe(1);
    const [frame] = readBatch(asB, 1);

    const peer = udpPeer(b, {
      bind: "198.18.0.2:8472",
      sendTo: "198.18.0.1:8472",
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
    expect([u32(p, 12), u32(p, 16), p[9], p[20]]).toEqual([A_TUNNEL, POD_B, 1, 0]); // echo reply back to the pod
    expect(hex(p.subarray(24))).toBe(hex(icmp.subarray(4))); // same id, sequence and data
  });
});
