// Checksum trust on real sockets and devices: the receive path skips its inner checksum check only
// for segments of a UDP GRO receive (the kernel verified their outer UDP checksum) and hands lone
// TCP and UDP packets of such receives to the TUN device with NEEDS_CSUM. Every other datagram —
// single ones with a checksum, zero-checksum ones from a kernel vxlan peer — keeps the full check:
// a corrupted inner segment is never merged, reaches the pod's kernel alone and is dropped and
// counted there (TcpInCsumErrors). Transfers through the trusted path stay byte-exact.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { TunQueue } from "../../src/io/tun.js";
import { UdpSocket } from "../../src/io/udp.js";
import type { LabCluster, LabPod } from "../../src/lab/cluster.js";
import { snmpCounter } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { Slots } from "../io/slots.js";
import { buildUdp4, buildVxlan } from "../reference/build.js";
import { buildTcp4 } from "../reference/tcp-offload.js";
import { dataplanePair, kernelPeerPair, macOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { payloadOf } from "../support/offload.js";
import { tcpTransfer } from "../support/tcp-transfer.js";
import { udpPeer } from "../support/udp-peer.js";

const MB = 1_000_000;

/** Waits (bounded) until `read` returns at least `want`, and returns what it last read. */
async function settle(read: () => Promise<number>, want: number, ms = 5000): Promise<number> {
  const until = Date.now() + ms;
  let v = await read();
  while (v < want && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    v = await read();
  }
  return v;
}

/**
 * Consecutive TCP segments of one flow from pod `from` to pod `to` (no listener: the pod answers
 * with RST), payloads of the given sizes; those with `bad` set carry a wrong TCP checksum.
 */
function segments(from: LabPod, to: LabPod, parts: Array<{ size: number; bad: boolean }>): Uint8Array[] {
  let seq = 1000;
  return parts.map((p, i) => {
    const b = buildTcp4({
      src: from.addr,
      dst: to.addr,
      srcPort: 40000,
      dstPort: 7999,
      seq,
      ack: 1,
      flags: 0x10,
      window: 1000,
      id: i,
      payload: payloadOf(i + 1, p.size),
    });
    seq += p.size;
    if (p.bad) b[36] ^= 0x5a;
    return b;
  });
}

/** A VXLAN datagram (VNI 1) carrying `ip` from host 1's VTEP to host 2's, as a peer sends it. */
const vxlan = (ip: Uint8Array) => buildVxlan(1, macOf(2), macOf(1), 0x0800, ip);

describe.skipIf(!canUseNetns())("checksum trust between weft nodes", () => {
  let lab: LabCluster;
  let dps: UserspaceDataplane[] = [];

  beforeAll(async () => {
    ({ lab, dps } = await dataplanePair("cktr"));
  });

  afterAll(async () => {
    for (const dp of dps) await dp.stop();
    await lab?.destroy();
  });

  it("carries TCP byte-exact through the trusted path, with no checksum errors at the pods", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const errors = async () =>
      (await snmpCounter(p1.ns, "Tcp", "InCsumErrors")) + (await snmpCounter(p2.ns, "Tcp", "InCsumErrors"));
    const errorsBefore = await errors();
    const trustedBefore = dps.map((dp) => dp.counters().rx.checksumTrusted);
    const there = await tcpTransfer(p1, p2, 30 * MB);
    expect(there.received).toEqual(there.sent);
    const back = await tcpTransfer(p2, p1, 30 * MB);
    expect(back.received).toEqual(back.sent);
    // Both receivers took segments of GRO receives (GSO trains) without their own check.
    dps.forEach((dp, i) => expect(dp.counters().rx.checksumTrusted).toBeGreaterThan(trustedBefore[i]));
    expect(await errors()).toBe(errorsBefore);
  });

  it("delivers the UDP packets of a GRO receive, handed over with NEEDS_CSUM, byte-exact", async () => {
    const [h1, h2] = lab.hosts;
    const [p1] = h1.pods;
    const [p2] = h2.pods;
    // Weft sends lone packets one datagram each, and lab veths do no GRO: host 1 sends the train
    // itself (UDP_SEGMENT), which reaches host 2's socket as one receive with a segment size.
    const sent = Array.from({ length: 10 }, (_, i) => payloadOf(7000 + i, 1000));
    const train = Buffer.concat(
      sent.map((d) => buildVxlan(1, macOf(2), macOf(1), 0x0800, buildUdp4(p1.addr, p2.addr, 40001, 9100, d))),
    );
    const errorsBefore = await snmpCounter(p2.ns, "Udp", "InCsumErrors");
    const trustedBefore = dps[1].counters().rx.checksumTrusted;
    const sink = udpPeer(p2.ns, { bind: `${formatIpv4(p2.addr)}:9100`, expect: sent.length, timeoutMs: 10_000 });
    await sink.ready;
    const sock = withNetns(h1.ns.name, () => UdpSocket.open({ address: h1.underlayAddr, port: 0 }));
    try {
      const slots = new Slots(64);
      slots.put(0, train); // spills over the unused slots behind slot 0
      slots.set(0, { ADDR: h2.underlayAddr, PORT: 8472, FLAGS: train.length / sent.length });
      expect(sock.send(slots.buf, slots.descs, 0, 1)).toBe(1);
    } finally {
      sock.close();
    }
    const got = await sink.done;
    expect(got.map((g) => Buffer.from(g.bytes).toString("hex")).sort()).toEqual(
      sent.map((d) => Buffer.from(d).toString("hex")).sort(),
    );
    expect(await snmpCounter(p2.ns, "Udp", "InCsumErrors")).toBe(errorsBefore);
    expect(dps[1].counters().rx.checksumTrusted - trustedBefore).toBe(BigInt(sent.length));
  });

  it("still drops and counts a corrupted inner checksum in single datagrams (outer checksum set)", async () => {
    const [h1, h2] = lab.hosts;
    const [p1] = h1.pods;
    const [p2] = h2.pods;
    // Growing sizes: UDP GRO never merges a longer datagram after a shorter one, so each comes alone.
    const segs = segments(p1, p2, [
      { size: 300, bad: false },
      { size: 400, bad: true },
      { size: 500, bad: true },
    ]);
    const rx = () => dps[1].counters().rx;
    const before = { errors: await snmpCounter(p2.ns, "Tcp", "InCsumErrors"), ...rx() };
    const peer = udpPeer(h1.ns, {
      bind: `${formatIpv4(h1.underlayAddr)}:0`,
      sendTo: `${formatIpv4(h2.underlayAddr)}:8472`,
      send: segs.map(vxlan),
    });
    await peer.done;
    const errors = await settle(() => snmpCounter(p2.ns, "Tcp", "InCsumErrors"), before.errors + 2);
    // weft forwarded all three as they were; the pod's kernel dropped exactly the two bad ones.
    expect(errors - before.errors).toBe(2);
    expect(rx().packets.FORWARD - before.packets.FORWARD).toBeGreaterThanOrEqual(3n);
    expect(rx().checksumTrusted).toBe(before.checksumTrusted);
  });
});

describe.skipIf(!canUseNetns())("checksum trust against a kernel vxlan peer (zero UDP checksums)", () => {
  let lab: LabCluster;
  let dp: UserspaceDataplane;
  let inject: TunQueue | undefined;

  beforeAll(async () => {
    ({ lab, dp } = await kernelPeerPair("cktk"));
    // Host 1 forwards what this device gives it to the kernel's vxlan device, which sends it with
    // a zero UDP checksum, so host 2's socket never gets it GRO-merged.
    const h1 = lab.hosts[0];
    inject = withNetns(h1.ns.name, () => TunQueue.open("ckinj"));
    await h1.ns.ip("link set ckinj up");
    // Sources in host 1's pod subnet arrive on this device, not the bridge: no reverse-path filter.
    await h1.ns.kernel.sysctl("net.ipv4.conf.all.rp_filter", 0);
    await h1.ns.kernel.sysctl("net.ipv4.conf.ckinj.rp_filter", 0);
  });

  afterAll(async () => {
    inject?.close();
    await dp?.stop();
    await lab?.destroy();
  });

  it("checks every segment in full: a corrupted one is never merged, and the pod's kernel drops and counts it", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    // Equal sizes, one flow, consecutive: what the coalescer would merge if it trusted them.
    const segs = segments(p1, p2, [
      { size: 600, bad: false },
      { size: 600, bad: true },
      { size: 600, bad: false },
      { size: 600, bad: true },
    ]);
    const slots = new Slots(segs.length);
    segs.forEach((s, i) => slots.put(i, s));
    const before = { errors: await snmpCounter(p2.ns, "Tcp", "InCsumErrors"), ...dp.counters().rx };
    expect(inject!.write(slots.buf, slots.descs, 0, segs.length)).toBe(segs.length);
    const errors = await settle(() => snmpCounter(p2.ns, "Tcp", "InCsumErrors"), before.errors + 2);
    expect(errors - before.errors).toBe(2);
    const rx = dp.counters().rx;
    expect(rx.packets.FORWARD - before.packets.FORWARD).toBeGreaterThanOrEqual(2n);
    expect(rx.checksumTrusted).toBe(before.checksumTrusted);
  });

  it("still carries TCP byte-exact from the kernel peer", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const before = dp.counters().rx.checksumTrusted;
    const t = await tcpTransfer(p1, p2, 20 * MB);
    expect(t.received).toEqual(t.sent);
    // Zero-checksum datagrams are never trusted, however many the coalescer merged.
    expect(dp.counters().rx.checksumTrusted).toBe(before);
  });
});
