// The offload paths (assembly/packet/offload-send.ts, offload-receive.ts) set up as a worker has
// them: a sender with 64 KiB slots and segment output slots, a receiver with GRO-sized slots,
// scratch descriptors and an output region. send()/receive() run whole calls for the tests;
// loadSend()/runSend() and loadReceive()/runReceive() split loading from the call for benchmarks.
import { SEGMENT_SLOT_BYTES } from "../../src/dataplane/dataplane.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { parsePrefix6, writeIpv6 } from "../../src/net/ipv6.js";
import { pseudoHeaderSum, transportOffset } from "../reference/tcp-offload.js";
import { makeRig, type Rig } from "./hotpath.js";

const VNI = 1;
export const MAC1 = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x01, 0x00]);
export const MAC2 = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x02, 0x00]);
export const PEER = { ip: 0xc6120002, port: 8472, mac: MAC2 };
/** The same peer over an IPv6 underlay, for IPv6 pods (2001:2:0:8002::/64); the sender's is 2001:2::1. */
export const PEER6 = { ip: 0x2001_0002_0000_0000_0000_0000_0000_0002n, port: 8472, mac: MAC2 };
export const SENDER6 = 0x2001_0002_0000_0000_0000_0000_0000_0001n;
const BIG_SLOT = 65536 + 64;
export type Format = "vxlan" | "udp";

interface Sender {
  rig: Rig;
  outDescs: number;
  out: number;
}
interface Receiver {
  rig: Rig;
  scratch: number;
  outDescs: number;
  outMax: number;
  out: number;
  cap: number;
}

function sender(): Sender {
  const rig = makeRig({
    vni: VNI,
    mac: MAC1,
    batchSize: 4,
    stride: BIG_SLOT,
    ipv6: { localAddr: 0x2001_0002_0000_8001_0000_0000_0000_0000n },
  });
  rig.routes.setNextHop(1, PEER);
  rig.routes.insert(parsePrefix("198.19.2.0/24"), 1);
  rig.routes6!.setNextHop(1, PEER6);
  rig.routes6!.insert(parsePrefix6("2001:2:0:8002::/64"), 1);
  const n = rig.batch.size;
  return {
    rig,
    outDescs: rig.arena.alloc(n * rig.hp.constant("OFFLOAD_MAX_TRAINS") * 32),
    out: rig.arena.alloc(n * SEGMENT_SLOT_BYTES),
  };
}

/**
 * With `antiSpoof` the receiver checks sources: IPv6 pods of 2001:2:0:8001::/64 must come from
 * SENDER6, which loadReceive's `from6` gives as a socket would (DESC_FLAG_ADDR6).
 */
function receiver(antiSpoof: boolean, uso = false): Receiver {
  const rig = makeRig({
    uso,
    vni: VNI,
    mac: MAC2,
    batchSize: 16,
    stride: BIG_SLOT,
    antiSpoof,
    ipv6: { localAddr: 0x2001_0002_0000_8002_0000_0000_0000_0000n },
  });
  rig.routes6!.setNextHop(1, { ip: SENDER6, port: 8472, mac: MAC1 });
  rig.routes6!.insert(parsePrefix6("2001:2:0:8001::/64"), 1);
  const outMax = rig.batch.size * 64;
  const cap = rig.batch.size * BIG_SLOT + outMax * 16 + BIG_SLOT;
  return {
    rig,
    scratch: rig.arena.alloc(256 * 32),
    outDescs: rig.arena.alloc(outMax * 32),
    outMax,
    out: rig.arena.alloc(cap),
    cap,
  };
}

/** The one sender and receiver: their memory lives as long as the module. */
export const TX = sender();
export const RX = receiver(false);
/** A receiver with anti-spoofing on, for IPv6 pods over an IPv6 underlay. */
export const RX6 = receiver(true);
/** Receivers whose TUN device takes USO: UDP datagrams are merged too. */
export const RX_USO = receiver(false, true);
export const RX6_USO = receiver(true, true);

/** Reads descriptor i of the array at `descs`: OFF, LEN, ADDR, PORT, FLAGS. */
function desc(rig: Rig, descs: number, i: number) {
  const d = new Int32Array(rig.hp.memory.buffer, descs + i * 32, 8);
  return { off: d[0], len: d[2], addr: d[3] >>> 0, port: d[4], flags: d[5] };
}

/**
 * A TUN read: the packet and its vnet header. TSO super-packets (GSO_TCPV4, the default) and lone
 * packets with NEEDS_CSUM carry the pseudo-header sum or junk in the TCP checksum field; a lone
 * packet without it (gsoType 0, needsCsum false) carries its finished checksum.
 */
export interface TunRead {
  bytes: Uint8Array;
  gsoSize: number;
  gsoType?: number;
  needsCsum?: boolean;
  /** The vnet header's csum_start, if not where the transport header starts (a lying header). */
  csumStart?: number;
}

/** Loads TUN reads (each packet with its vnet header) into the sender's batch. */
export function loadSend(packets: TunRead[]): void {
  const { rig } = TX;
  rig.batch.load(packets.map((p) => p.bytes));
  const mem = rig.hp.bytes();
  packets.forEach((p, i) => {
    const h = desc(rig, rig.batch.descs, i).off - 12;
    const v = new DataView(mem.buffer, h, 12);
    const needsCsum = p.needsCsum ?? true;
    v.setUint8(0, needsCsum ? 1 : 0);
    v.setUint8(1, p.gsoType ?? 1); // GSO_TCPV4 unless said otherwise
    const l4 = transportOffset(p.bytes);
    v.setUint16(2, l4 + (p.bytes[l4 + 12] >> 4) * 4, true);
    v.setUint16(4, p.gsoSize, true);
    v.setUint16(6, p.csumStart ?? (needsCsum ? l4 : 0), true);
    v.setUint16(8, needsCsum ? 16 : 0, true);
  });
}

/** One send-path call over the n loaded packets: sends | replies << 16. */
export function runSend(n: number, format: Format): number {
  const { hp } = TX.rig;
  return hp.fn.encapBatch(
    TX.rig.ctx.ptr,
    TX.rig.batch.descs,
    n,
    hp.wireFormat(format),
    1,
    TX.outDescs,
    TX.out,
    SEGMENT_SLOT_BYTES,
  );
}

/** Runs the send path on TUN reads: the UDP (GSO) sends, the ICMP replies' count, the memory. */
export function send(packets: TunRead[], format: Format) {
  loadSend(packets);
  const r = runSend(packets.length, format);
  const trains = Array.from({ length: r & 0xffff }, (_, i) => desc(TX.rig, TX.outDescs, i));
  return { trains, replies: r >>> 16, mem: TX.rig.hp.bytes() };
}

/** The datagrams of the sends, cut at each send's GSO segment size. */
export function datagrams(trains: ReturnType<typeof send>["trains"], mem: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const t of trains) {
    const step = t.flags & 0xffff || t.len;
    for (let at = 0; at < t.len; at += step) out.push(mem.slice(t.off + at, t.off + Math.min(t.len, at + step)));
  }
  return out;
}

/**
 * Loads runs of datagrams into the receiver's batch, each run one UDP GRO receive; with `from6`,
 * as an IPv6 socket receives them from that sender (its address at the slot's start, ADDR its
 * offset, DESC_FLAG_ADDR6 beside the segment size).
 */
export function loadReceive(runs: Uint8Array[][], rx: Receiver = RX, from6?: bigint): void {
  const { rig } = rx;
  rig.batch.load(runs.map((r) => Buffer.concat(r)));
  const d = rig.batch.descView();
  const headroom = rig.hp.constant("HEADROOM");
  runs.forEach((r, i) => {
    d[i * 8 + 5] = r.length > 1 ? r[0].length : 0;
    if (from6 === undefined) return;
    const at = d[i * 8] - headroom;
    writeIpv6(rig.hp.bytes(), at, from6);
    d[i * 8 + 3] = at;
    d[i * 8 + 5] |= rig.hp.constant("DESC_FLAG_ADDR6");
  });
}

/** One receive-path call over n loaded receives: the number of packets for the TUN device. */
export function runReceive(n: number, format: Format, rx: Receiver = RX): number {
  const { rig } = rx;
  const { hp } = rig;
  return hp.fn.decapBatch(
    rig.ctx.ptr,
    rig.batch.descs,
    n,
    hp.wireFormat(format),
    1,
    rx.scratch,
    rx.outDescs,
    rx.outMax,
    rx.out,
    rx.cap,
  );
}

/** Receives runs of datagrams (each run one GRO batch) and returns the packets for the TUN device with their vnet headers. */
export function receive(runs: Uint8Array[][], format: Format, rx: Receiver = RX, from6?: bigint) {
  loadReceive(runs, rx, from6);
  const n = runReceive(runs.length, format, rx);
  const mem = rx.rig.hp.bytes();
  return Array.from({ length: n }, (_, i) => {
    const o = desc(rx.rig, rx.outDescs, i);
    const h = new DataView(mem.buffer, o.off - 12, 12);
    return {
      bytes: mem.slice(o.off, o.off + o.len),
      flags: h.getUint8(0),
      gsoType: h.getUint8(1),
      hdrLen: h.getUint16(2, true),
      gsoSize: h.getUint16(4, true),
      csumStart: h.getUint16(6, true),
      csumOffset: h.getUint16(8, true),
    };
  });
}

/** A TCP/IPv4 packet as the kernel leaves it with NEEDS_CSUM: its checksum field holds the pseudo-header sum. */
export function leavePartial(bytes: Uint8Array): Uint8Array {
  const sum = pseudoHeaderSum(bytes, 6, bytes.length - 20);
  bytes[36] = sum >> 8;
  bytes[37] = sum & 255;
  return bytes;
}

/** Cheap deterministic payload bytes. */
export function payloadOf(seed: number, length: number): Uint8Array {
  const p = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    p[i] = x & 255;
  }
  return p;
}

/** Random interleaving of per-flow datagram lists that keeps each flow's order. */
export function interleave(lists: Uint8Array[][], picks: number[]): Uint8Array[] {
  const at = lists.map(() => 0);
  const out: Uint8Array[] = [];
  let k = 0;
  while (out.length < lists.reduce((n, l) => n + l.length, 0)) {
    const open = lists.map((_, i) => i).filter((i) => at[i] < lists[i].length);
    const i = open[picks[k++ % picks.length] % open.length];
    out.push(lists[i][at[i]++]);
  }
  return out;
}

/**
 * Cuts datagrams into runs as UDP GRO would: equal sizes, a shorter one only last, at most `max`
 * datagrams and 65,535 bytes.
 */
export function groRuns(ds: Uint8Array[], maxes: number[]): Uint8Array[][] {
  const runs: Uint8Array[][] = [];
  let k = 0;
  for (let i = 0; i < ds.length; ) {
    const run = [ds[i++]];
    let bytes = run[0].length;
    const max = maxes[k++ % maxes.length];
    while (i < ds.length && run.length < max && ds[i].length <= run[0].length && bytes + ds[i].length <= 65535) {
      bytes += ds[i].length;
      run.push(ds[i++]);
      if (run[run.length - 1].length < run[0].length) break;
    }
    runs.push(run);
  }
  return runs;
}
