// The dataplane's I/O seam (src/io/batch-io.ts) against the real kernel: a TUN queue and a UDP
// socket pair, lent and borrowed as a worker gets them, used only through PacketQueue and
// DatagramBind. A batch goes the way the dataplane moves one — TUN read, send, receive, TUN write —
// with offloads off (single packets) and on (a USO super-packet with its vnet header, a GSO send,
// a GRO receive), so both settings are shown to be the same calls with other segment counts. Over
// IPv4 and over IPv6: an IPv6 TUN device (USO6 super-packets), IPv6 sockets on an IPv6 underlay
// whose peers are DESC_FLAG_ADDR6 descriptors (the address's 16 bytes in the buffer, ADDR their
// offset), both ways.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIpv4, parseIpv4 } from "../../src/net/ipv4.js";
import { formatIpv6, readIpv6, writeIpv6 } from "../../src/net/ipv6.js";
import type { DatagramBind, PacketQueue } from "../../src/io/batch-io.js";
import { native } from "../../src/io/native.js";
import { withNetns } from "../../src/io/netns.js";
import { TUN_OFFLOAD, TunQueue } from "../../src/io/tun.js";
import { UdpSocket } from "../../src/io/udp.js";
import { buildIpv4 } from "../reference/build.js";
import { onesSum } from "../reference/checksum.js";
import { canUseNetns, Netns, vethPair } from "../support/netns.js";
import { SLOT_BYTES, Slots } from "./slots.js";
import { until } from "./until.js";

const A = parseIpv4("198.18.0.1");
const B = parseIpv4("198.18.0.2");
const LOCAL = parseIpv4("198.19.0.1"); // the TUN device's address in namespace A
const PEER = parseIpv4("198.19.0.2"); // routed to the TUN device
const APP_PORT = 7000;
const SEGMENT = 1000;
const SEGMENTS = 12;
const VNET_GSO_UDP_L4 = 5;
const IPV4_UDP_HEADERS = 28;
const IPV6_UDP_HEADERS = 48;
// IPv6: underlay 2001:2::1 / ::2 on the veth pair, the TUN device 2001:2:0:8000::1/64, its peer ::2.
const A6 = 0x2001_0002_0000_0000_0000_0000_0000_0001n;
const B6 = 0x2001_0002_0000_0000_0000_0000_0000_0002n;
const LOCAL6 = 0x2001_0002_0000_8000_0000_0000_0000_0001n;
const PEER6 = 0x2001_0002_0000_8000_0000_0000_0000_0002n;

/** Per family: addresses, and what a packet of the application looks like. */
const FAMILIES = {
  4: { a: A, b: B, local: LOCAL, peer: PEER, headers: IPV4_UDP_HEADERS, prefix: 24 },
  6: { a: A6, b: B6, local: LOCAL6, peer: PEER6, headers: IPV6_UDP_HEADERS, prefix: 64 },
} as const;
const formatAny = (a: number | bigint) => (typeof a === "bigint" ? formatIpv6(a) : formatIpv4(a));

/**
 * Points descriptor i of `s` at peer `to`: an IPv4 address is ADDR itself; an IPv6 one is written
 * to the first 16 bytes of the slot's headroom, ADDR its offset, FLAGS with DESC_FLAG_ADDR6.
 */
function setPeer(s: Slots, i: number, to: number | bigint, port: number, segment = 0): void {
  if (typeof to === "number") return s.set(i, { ADDR: to, PORT: port, FLAGS: segment });
  const at = s.get(i, "OFF") - native.HEADROOM;
  writeIpv6(s.buf, at, to);
  s.set(i, { ADDR: at, PORT: port, FLAGS: segment | native.DESC_FLAG_ADDR6 });
}

/** The sender of received descriptor i, as recv reported it. */
function peerOf(s: Slots, i: number): number | bigint {
  return s.get(i, "FLAGS") & native.DESC_FLAG_ADDR6 ? readIpv6(s.buf, s.get(i, "ADDR")) : s.get(i, "ADDR") >>> 0;
}

/**
 * Readies `s` for a read and returns how many descriptors to read: with offloads descriptor 0
 * spans every slot, since a super-packet or GRO receive of 12 segments does not fit one 2 KiB slot.
 */
function readyToRead(s: Slots, offloads: boolean): number {
  s.reset();
  if (!offloads) return SEGMENTS;
  s.set(0, { CAP: SEGMENTS * SLOT_BYTES - native.HEADROOM });
  return 1;
}

/** Segment i of the application's data: its index, then filler that varies with it. */
function segment(i: number): Uint8Array {
  const s = new Uint8Array(SEGMENT).fill((i * 29) & 255);
  s[0] = i;
  return s;
}

/**
 * A UDP packet from the TUN device's peer to the application: IPv4 with UDP checksum 0 (none,
 * which IPv4 allows), IPv6 with its checksum, which IPv6 requires.
 */
function toApp(data: Uint8Array, family: 4 | 6): Uint8Array {
  const udp = new Uint8Array(8 + data.length);
  const len = udp.length;
  udp.set([APP_PORT >> 8, APP_PORT & 255, APP_PORT >> 8, APP_PORT & 255, len >> 8, len & 255, 0, 0]);
  udp.set(data, 8);
  if (family === 4) return buildIpv4({ src: PEER, dst: LOCAL, protocol: 17, payload: udp });
  const p = new Uint8Array(40 + len);
  p.set([0x60, 0, 0, 0, len >> 8, len & 255, 17, 64]);
  writeIpv6(p, 8, PEER6);
  writeIpv6(p, 24, LOCAL6);
  p.set(udp, 40);
  const pseudo = Uint8Array.from([...p.subarray(8, 40), 0, 0, len >> 8, len & 255, 0, 0, 0, 17]);
  const sum = ~onesSum(udp, onesSum(pseudo)) & 0xffff || 0xffff;
  p[46] = sum >> 8;
  p[47] = sum & 255;
  return p;
}

describe.skipIf(!canUseNetns())("the I/O seam: PacketQueue and DatagramBind", () => {
  let nsA: Netns;
  let nsB: Netns;

  beforeAll(async () => {
    nsA = await Netns.create("seama");
    nsB = await Netns.create("seamb");
    await vethPair(nsA, "va", "198.18.0.1/24", nsB, "vb", "198.18.0.2/24");
    await nsA.ip(`-6 addr add ${formatIpv6(A6)}/64 dev va nodad`);
    await nsB.ip(`-6 addr add ${formatIpv6(B6)}/64 dev vb nodad`);
  });
  afterAll(async () => {
    await nsA?.destroy();
    await nsB?.destroy();
  });

  for (const [family, offloads] of [
    [4, false],
    [4, true],
    [6, false],
    [6, true],
  ] as const) {
    it(`moves a batch TUN → socket → socket → TUN over IPv${family} with offloads ${offloads ? "on" : "off"}`, async () => {
      const name = `wtseam${family}${offloads ? 1 : 0}`;
      const f = FAMILIES[family];
      const handles: Array<TunQueue | UdpSocket> = [];
      const opened = <T extends TunQueue | UdpSocket>(h: T): T => (handles.push(h), h);
      try {
        const owned = opened(withNetns(nsA.name, () => TunQueue.open(name, { vnetHdr: offloads })));
        if (offloads)
          owned.setOffload(
            TUN_OFFLOAD.CSUM | TUN_OFFLOAD.TSO4 | TUN_OFFLOAD.TSO6 | TUN_OFFLOAD.USO4 | TUN_OFFLOAD.USO6,
          );
        await nsA.ip(`addr add ${formatAny(f.local)}/${f.prefix} dev ${name}${family === 6 ? " nodad" : ""}`);
        await nsA.ip(`link set ${name} up`);
        const app = opened(
          withNetns(nsA.name, () => UdpSocket.open({ address: f.local, port: APP_PORT, reusePort: false })),
        );
        const a = opened(withNetns(nsA.name, () => UdpSocket.open({ address: f.a, port: 0, gro: offloads })));
        const b = opened(
          withNetns(nsB.name, () => UdpSocket.open({ address: f.b, port: 0, gro: offloads, rcvbuf: 1 << 20 })),
        );
        expect([app.family, a.family, b.family]).toEqual([family, family, family]);
        // As a worker has them: borrowed from what the owner lent, typed as the seam.
        const tun: PacketQueue = TunQueue.borrow(owned.lend());
        const sender: DatagramBind = UdpSocket.borrow(a.lend());
        const receiver: DatagramBind = UdpSocket.borrow(b.lend());
        expect(tun.vnetHdr).toBe(offloads);

        // The application sends 12 segments to PEER: one USO send with offloads, 12 datagrams without.
        const s = new Slots(SEGMENTS);
        if (offloads) {
          s.put(0, Uint8Array.from(Array.from({ length: SEGMENTS }, (_, i) => [...segment(i)]).flat()));
          setPeer(s, 0, f.peer, APP_PORT, SEGMENT);
          expect(app.send(s.buf, s.descs, 0, 1)).toBe(1);
        } else {
          for (let i = 0; i < SEGMENTS; i++) {
            s.put(i, segment(i));
            setPeer(s, i, f.peer, APP_PORT);
          }
          expect(app.send(s.buf, s.descs, 0, SEGMENTS)).toBe(SEGMENTS);
        }

        // TUN read: with offloads one super-packet with a GSO_UDP_L4 vnet header, else 12 packets.
        const read = new Slots(SEGMENTS);
        const packets: Uint8Array[] = [];
        const headers: DataView[] = [];
        await until("the application's packets on the TUN queue", () => {
          const n = tun.read(read.buf, read.descs, 0, readyToRead(read, offloads));
          for (let i = 0; i < n; i++) {
            const p = read.packet(i);
            const ours =
              family === 4
                ? p[0] === 0x45 && p[9] === 17 && ((p[22] << 8) | p[23]) === APP_PORT
                : p[0] >> 4 === 6 && p[6] === 17 && ((p[42] << 8) | p[43]) === APP_PORT;
            if (!ours) continue; // skip other chatter (IPv6: MLD reports)
            packets.push(p);
            const off = read.get(i, "OFF");
            headers.push(new DataView(read.buf.slice(off - native.VNET_HDR_BYTES, off).buffer));
          }
          return packets.length >= (offloads ? 1 : SEGMENTS) ? true : undefined;
        });
        expect(packets.length).toBe(offloads ? 1 : SEGMENTS);
        if (offloads) {
          expect(headers[0].getUint8(1)).toBe(VNET_GSO_UDP_L4);
          expect(headers[0].getUint16(4, true)).toBe(SEGMENT);
        }

        // Send the packets' UDP payloads to b, as the dataplane sends segments: one GSO send of
        // 12 segments with offloads, 12 single datagrams without.
        const out = new Slots(SEGMENTS);
        packets.forEach((p, k) => {
          out.put(k, p.subarray(f.headers));
          setPeer(out, k, f.b, b.port, offloads ? SEGMENT : 0);
        });
        expect(sender.send(out.buf, out.descs, 0, packets.length)).toBe(packets.length);

        // Receive: GRO hands the segments over in few descriptors (FLAGS = segment size).
        const got = new Slots(SEGMENTS);
        const received: Uint8Array[] = [];
        let descriptors = 0;
        await until("12 segments at b", () => {
          const n = receiver.recv(got.buf, got.descs, 0, readyToRead(got, offloads)) & 0xffff;
          for (let i = 0; i < n; i++) {
            const bytes = got.packet(i);
            expect(peerOf(got, i)).toBe(f.a);
            const step = got.get(i, "FLAGS") & 0xffff || bytes.length;
            for (let at = 0; at < bytes.length; at += step) received.push(bytes.slice(at, at + step));
          }
          descriptors += n;
          return received.length >= SEGMENTS ? true : undefined;
        });
        expect(received).toEqual(Array.from({ length: SEGMENTS }, (_, i) => segment(i)));
        if (offloads) expect(descriptors).toBeLessThan(SEGMENTS);
        else expect(descriptors).toBe(SEGMENTS);

        // TUN write: each segment back to the application as a packet of its own, with a zeroed
        // vnet header in front when the queue has them; one batch.
        const back = new Slots(SEGMENTS);
        received.forEach((seg, i) => {
          back.put(i, toApp(seg, family));
          if (offloads) back.buf.fill(0, back.get(i, "OFF") - native.VNET_HDR_BYTES, back.get(i, "OFF"));
        });
        expect(tun.write(back.buf, back.descs, 0, SEGMENTS)).toBe(SEGMENTS);
        const delivered: Uint8Array[] = [];
        const at = new Slots(SEGMENTS);
        await until("12 datagrams at the application", () => {
          const n = app.recv(at.buf, at.descs, 0, SEGMENTS) & 0xffff;
          for (let i = 0; i < n; i++) delivered.push(at.packet(i));
          at.reset();
          return delivered.length >= SEGMENTS ? true : undefined;
        });
        expect(delivered).toEqual(Array.from({ length: SEGMENTS }, (_, i) => segment(i)));
      } finally {
        for (const h of handles) h.close();
      }
    });
  }

  it("a borrowed handle lets go on close and leaves the owner's fd open", () => {
    const owned = withNetns(nsB.name, () => UdpSocket.open({ address: B, port: 0 }));
    try {
      const borrowed = UdpSocket.borrow(owned.lend());
      expect(borrowed.fd).toBe(owned.fd);
      borrowed.close();
      expect(() => borrowed.fd).toThrow(expect.objectContaining({ code: "IO_CLOSED" }));
      const s = new Slots(1);
      expect(owned.recv(s.buf, s.descs, 0, 1)).toBe(0); // still open: nothing queued, no EBADF
    } finally {
      owned.close();
    }
  });
});
