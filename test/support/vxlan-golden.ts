// The kernel golden tests' one procedure, for either underlay family: host A runs the Linux vxlan
// device exactly as flannel sets it up, host B is a plain UDP socket on port 8472 standing where
// weft's dataplane would be. The kernel sends a UDP datagram and two pings to a pod behind B: our
// decapsulation of the three frames must give exactly the inner packets the kernel carried, and
// our encapsulation of those packets must equal the kernel's bytes. Then B sends A an echo
// request we encapsulated, and the kernel must answer it through its vxlan device.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addVxlanPeer, createVxlanDevice, type VxlanDeviceSpec } from "../../src/backends/vxlan/device.js";
import type { IpAddr, IpPrefix } from "../../src/net/ip.js";
import type { Ipv4Prefix } from "../../src/net/ipv4.js";
import type { Ipv6Prefix } from "../../src/net/ipv6.js";
import { decapInPlace, encapInPlace, loadBatch, makeRig, readBatch, type Rig, type SlotResult } from "./hotpath.js";
import { Netns, canUseNetns, vethPair } from "./netns.js";
import { udpPeer } from "./udp-peer.js";

export const VNI = 1;

/** What differs between the IPv4 and the IPv6 runs. */
export interface GoldenFamily {
  readonly title: string;
  /** Namespace name prefix. */
  readonly tag: string;
  /** The veth pair's addresses (ip addr syntax) and the UDP endpoints on them. */
  readonly veth: readonly [string, string];
  readonly endpoints: { readonly a: string; readonly b: string };
  /** A's vxlan device and its one peer, B. */
  readonly device: Pick<VxlanDeviceSpec, "local" | "subnet" | "mtu">;
  readonly peer: { readonly subnet: IpPrefix; readonly underlay: IpAddr };
  readonly macs: { readonly a: Uint8Array; readonly b: Uint8Array };
  /** A pod address behind B (text) and what A's kernel runs to reach it. */
  readonly podB: string;
  readonly udpSocket: "udp4" | "udp6";
  readonly ping: readonly string[];
  /** Checks of one inner packet the kernel sent (beyond being exactly what it carried). */
  checkInner(inner: Uint8Array, frame: Uint8Array): void;
  /** The inner packets' protocol and, for UDP, where its payload starts. */
  protocol(inner: Uint8Array): "udp" | "ping" | "other";
  readonly udpPayloadAt: number;
  /** ICMP type of the kernel's echo requests and their inner length (200 bytes of data). */
  readonly echoRequestType: number;
  readonly icmpTypeAt: number;
  readonly pingLength: number;
  /** The underlay address our encapsulation sends a packet to. */
  underlayOf(rig: Rig, r: SlotResult): IpAddr;
  /** Optional check of where the kernel's frames came from. */
  checkSender?(from: string): void;
  /** An echo request from the pod behind B to A's vxlan address (with its ICMP part). */
  echoRequest(text: string): { packet: Uint8Array; icmp: Uint8Array };
  /** Checks the kernel's answer to echoRequest, decapsulated. */
  checkEchoReply(inner: Uint8Array, icmp: Uint8Array): void;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

export function goldenSuite(f: GoldenFamily): void {
  /** A weft rig as host `self`, routing the other host's subnet. */
  const rig = (self: "a" | "b") =>
    self === "a"
      ? goldenRig({ mac: f.macs.a, tunnel: f.device.subnet.addr }, { ...f.peer, mac: f.macs.b })
      : goldenRig(
          { mac: f.macs.b, tunnel: f.peer.subnet.addr },
          { subnet: f.device.subnet, underlay: f.device.local, mac: f.macs.a },
        );
  describe.skipIf(!canUseNetns())(f.title, () => {
    let a: Netns;
    let b: Netns;

    beforeAll(async () => {
      a = await Netns.create(`${f.tag}-a`);
      b = await Netns.create(`${f.tag}-b`);
      await vethPair(a, "ul0", f.veth[0], b, "ul0", f.veth[1]);
      await createVxlanDevice(a.kernel, { vni: VNI, dev: "ul0", port: 8472, vtepMac: f.macs.a, ...f.device });
      await addVxlanPeer(a.kernel, VNI, { ...f.peer, vtepMac: f.macs.b });
    });

    afterAll(async () => {
      await a?.destroy();
      await b?.destroy();
    });

    it("decapsulates the kernel's frames to the exact inner packets and encapsulates them to the kernel's bytes", async () => {
      const capture = udpPeer(b, { bind: f.endpoints.b, expect: 3, timeoutMs: 8000 });
      await capture.ready;
      const message = new TextEncoder().encode(`hello from the kernel's vxlan over ${f.udpSocket}`);
      await a.exec([
        process.execPath,
        "-e",
        `
        const s = require("node:dgram").createSocket("${f.udpSocket}");
        s.send(Buffer.from(${JSON.stringify(hex(message))}, "hex"), 5555, "${f.podB}", () => s.close());`,
      ]);
      await a.exec([...f.ping, "-c", "2", "-i", "0.2", "-W", "1", "-s", "200", f.podB]).catch(() => undefined); // nobody answers
      const frames = await capture.done;
      expect(frames.length).toBe(3);
      for (const frame of frames) f.checkSender?.(frame.from);

      // Decapsulate all three in one batch, as host B.
      const asB = rig("b");
      loadBatch(
        asB,
        frames.map((fr) => fr.bytes),
      );
      expect(decapInPlace(asB, "vxlan", frames.length)).toBe(3);
      const inner = readBatch(asB, 3)
        .sort((x, y) => x.slot - y.slot)
        .map((r) => r.bytes);
      inner.forEach((p, i) => {
        expect(hex(p)).toBe(hex(frames[i].bytes.subarray(22))); // exactly what the kernel carried
        f.checkInner(p, frames[i].bytes);
      });
      const udp = inner.find((p) => f.protocol(p) === "udp")!;
      expect(hex(udp.subarray(f.udpPayloadAt))).toBe(hex(message));
      const pings = inner.filter((p) => f.protocol(p) === "ping");
      expect(pings.map((p) => p[f.icmpTypeAt])).toEqual([f.echoRequestType, f.echoRequestType]);
      expect(pings.map((p) => p.length)).toEqual([f.pingLength, f.pingLength]);

      // Encapsulate the same inner packets as host A: byte for byte the kernel's VXLAN payloads.
      const asA = rig("a");
      loadBatch(asA, inner);
      expect(encapInPlace(asA, "vxlan", inner.length)).toBe(3);
      for (const r of readBatch(asA, 3)) {
        expect(hex(r.bytes)).toBe(hex(frames[r.slot].bytes));
        expect([f.underlayOf(asA, r), r.port]).toEqual([f.peer.underlay, 8472]);
      }
    });

    it("has the kernel accept what we encapsulate and answer through its vxlan device", async () => {
      const asB = rig("b");
      const { packet, icmp } = f.echoRequest("weft golden ping");
      loadBatch(asB, [packet]);
      expect(encapInPlace(asB, "vxlan", 1)).toBe(1);
      const [frame] = readBatch(asB, 1);

      const peer = udpPeer(b, {
        bind: f.endpoints.b,
        sendTo: f.endpoints.a,
        send: [frame.bytes],
        expect: 1,
        timeoutMs: 8000,
      });
      const [reply] = await peer.done;
      expect(reply).toBeDefined();
      loadBatch(asB, [reply.bytes]);
      expect(decapInPlace(asB, "vxlan", 1)).toBe(1);
      const [answer] = readBatch(asB, 1);
      f.checkEchoReply(answer.bytes, icmp);
    });
  });
}

/** A weft rig as one golden host: its MAC and tunnel address, a route to the other's subnet. */
function goldenRig(
  self: { mac: Uint8Array; tunnel: IpAddr },
  peer: { subnet: IpPrefix; underlay: IpAddr; mac: Uint8Array },
): Rig {
  if (typeof self.tunnel === "bigint") {
    const rig = makeRig({ vni: VNI, mac: self.mac, ipv6: { localAddr: self.tunnel } });
    rig.routes6!.setNextHop(0, { ip: peer.underlay as bigint, port: 8472, mac: peer.mac });
    rig.routes6!.insert(peer.subnet as Ipv6Prefix, 0);
    return rig;
  }
  const rig = makeRig({ vni: VNI, mac: self.mac });
  rig.routes.setNextHop(0, { ip: peer.underlay as number, port: 8472, mac: peer.mac });
  rig.routes.insert(peer.subnet as Ipv4Prefix, 0);
  return rig;
}
